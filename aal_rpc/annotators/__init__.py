"""Annotators: simulated oracles answering from ground truth, and a terminal front end for people."""
