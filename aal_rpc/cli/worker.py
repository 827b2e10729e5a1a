"""aal-worker: a selector that scores its shard of the unlabeled data and submits candidates to S.

It rides out an outage of any length (its calls retry until the coordinator answers again); a wrong token or
TLS setting, or any other refused call, ends it with one line.
"""

from __future__ import annotations

import signal

import click

from aal_rpc.cli.common import (Command, check_model, coordinator_option, default_id, first_contact,
                                log_level_option, model_failures, on_termination, run_program, security_options,
                                set_threads, strategy_list, threads_option)
from aal_rpc.client import CoordinatorClient
from aal_rpc.strategies import STRATEGIES
from aal_rpc.selector import Selector, WorkerConfig
from aal_rpc.selector.loop import COLD_STARTS


@click.command(cls=Command)
@coordinator_option
@click.option("--worker-id", default=None, help="Name recorded in provenance (default: worker-HOST-PID).")
@click.option("--shard-index", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--num-shards", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--strategy", type=click.Choice(sorted(STRATEGIES)), default="entropy", show_default=True)
@click.option("--strategy-by-shard", default=None, metavar="A,B,...", callback=strategy_list,
              help="Pick the strategy by shard index, round-robin over this list (one setting for a whole "
                   "StatefulSet); overrides --strategy.")
@click.option("--batch-size", type=click.IntRange(min=1), default=20, show_default=True,
              help="Most candidates submitted per round.")
@click.option("--poll-seconds", type=click.FloatRange(min=0.05, max=30), default=0.5, show_default=True,
              help="Longest wait for a new model before checking the pool's demand again.")
@click.option("--cold-start", type=click.Choice(COLD_STARTS), default=WorkerConfig.cold_start, show_default=True,
              help="Before any model: random picks, or typical items (TypiClust) of the embedding the task's "
                   "network gives at initial weights. Either way, typical items of a pretrained encoder's embedding "
                   "once one is published (aal-server --pretrain-steps).")
@click.option("--cm-epsilon", type=click.FloatRange(min=0, min_open=True), default=None,
              help="cluster_margin: HAC distance threshold (default: half the median pairwise embedding distance).")
@click.option("--cm-margin-pool-factor", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="cluster_margin: k_m / batch size, how many smallest-margin items are considered.")
@click.option("--cm-recluster-after", type=click.IntRange(min=0), default=0, show_default=True,
              help="cluster_margin: recluster when the embeddings are this many model versions old (0: never; "
                   "SIGHUP asks for a recluster at the next model).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda:0.")
@threads_option
@security_options
@log_level_option
def main(coordinator, worker_id, shard_index, num_shards, strategy, strategy_by_shard, batch_size, poll_seconds,
         cold_start, cm_epsilon, cm_margin_pool_factor, cm_recluster_after, seed, device, threads, security):
    """Run a worker (selector) on shard SHARD_INDEX of NUM_SHARDS."""
    set_threads(threads)
    if shard_index >= num_shards:
        raise click.BadParameter(f"must be below --num-shards ({num_shards})", param_hint="--shard-index")
    if strategy_by_shard:
        strategy = strategy_by_shard[shard_index % len(strategy_by_shard)]
    config = WorkerConfig(worker_id=worker_id or default_id("worker"), shard_index=shard_index,
                          num_shards=num_shards, strategy=strategy, batch_size=batch_size, seed=seed,
                          poll_seconds=poll_seconds, device=device, cold_start=cold_start,
                          strategy_options={"epsilon": cm_epsilon, "margin_pool_factor": cm_margin_pool_factor,
                                            "recluster_after": cm_recluster_after}
                          if strategy == "cluster_margin" else {})
    with CoordinatorClient(coordinator, retry_for=None, security=security) as client:
        first_contact(client)
        check_model(client.task(), client.weights_fingerprint(), run=True)
        selector = Selector(client, config)
        on_termination(lambda: (client.stop_retrying(), selector.stop()))
        if hasattr(selector.strategy, "request_recluster"):
            signal.signal(signal.SIGHUP, lambda *_: selector.strategy.request_recluster())
        with model_failures("scoring the shard"):
            selector.run()


def run() -> None:
    """The aal-worker program (see run_program: no slow interpreter teardown after a clean stop)."""
    run_program(main)


if __name__ == "__main__":
    run()
