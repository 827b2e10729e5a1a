"""The tokens file: comments, refusals that never echo a secret, identities, and who a call comes from."""

import asyncio
import logging
import subprocess

import grpc
import pytest

from aal_rpc.experiment.processes import command
from aal_rpc.grpc_utils import create_server, server_loop
from aal_rpc.security import (TOKENS_ENV, ClientSecurity, Principal, TokenAuthInterceptor, current_caller,
                              load_tokens, parse_tokens)

SECRET = "s3cr3t-XYZ"


def test_a_hash_inside_a_token_is_part_of_it():
    text = "  # the admins\nadmin:Zq#9fLk2\n\t#annotator:commented-out\n"
    assert parse_tokens(text) == {"Zq#9fLk2": Principal("admin")}


def test_commas_and_colons_belong_to_the_token():
    assert parse_tokens("admin:abc,def\nworker:a:b") == {"abc,def": Principal("admin"), "a:b": Principal("worker")}


def test_an_identity_can_be_tied_to_a_token():
    text = "annotator alice tok-a\nannotator:tok-shared\nannotator bob ab:cd#1\nadmin ops adm-1"
    assert parse_tokens(text) == {"tok-a": Principal("annotator", "alice"), "tok-shared": Principal("annotator"),
                                  "ab:cd#1": Principal("annotator", "bob"), "adm-1": Principal("admin", "ops")}


@pytest.mark.parametrize("line", [
    f"admin:{SECRET} more",  # a token holds no whitespace
    f"admin extra {SECRET} more",
    f"annotator {SECRET}",  # an identity without a token, or a token without an identity
    f"root:{SECRET}",
    f"{SECRET}",
    f"admin:{SECRET}\x01",
    f"admin:{SECRET}\u00e9",
    f"annotator:{SECRET},worker:{SECRET}2",  # the old comma-separated list
    f"{SECRET}:admin",
    f"admin : {SECRET}",  # not an identity ':'
])
def test_a_malformed_line_is_refused_without_echoing_its_secret(line):
    with pytest.raises(ValueError) as info:
        parse_tokens(f"# header\nworker:fine-token\n{line}\n", source="tokens.txt")
    message = str(info.value)
    assert message.startswith("tokens.txt line 3")
    assert "s3cr3t" not in message and "XYZ" not in message


def test_an_empty_token_is_refused():
    with pytest.raises(ValueError, match=r"line 1 \(admin\): the token is empty"):
        parse_tokens("admin:")


def test_a_token_given_twice_is_refused():
    with pytest.raises(ValueError) as info:
        parse_tokens(f"annotator:{SECRET}\nworker:other\nadmin:{SECRET}")
    assert "line 3" in str(info.value) and "line 1" in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(ValueError, match="line 2"):
        parse_tokens(f"annotator alice {SECRET}\nannotator bob {SECRET}")


@pytest.mark.parametrize("text", ["", "\n\n", "# no tokens yet\n   # none here either\n"])
def test_a_tokens_file_without_tokens_is_refused(tmp_path, monkeypatch, text):
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ValueError, match="holds no token"):
        load_tokens(path)
    monkeypatch.setenv(TOKENS_ENV, text)
    with pytest.raises(ValueError, match=r"\$AAL_TOKENS holds no token"):
        load_tokens(None)
    monkeypatch.delenv(TOKENS_ENV)
    assert load_tokens(None) == {}  # nothing given: authentication is off, as documented


def test_a_tokens_file_that_is_not_text_is_refused_without_quoting_it(tmp_path):
    path = tmp_path / "tokens"
    path.write_bytes(b"admin:\xff\xfe" + SECRET.encode())
    with pytest.raises(ValueError) as info:
        load_tokens(path)
    assert "not UTF-8" in str(info.value) and "xff" not in str(info.value)


def test_the_coordinator_refuses_to_start_without_a_token_or_with_a_bad_line(tmp_path):
    """The installed command ends at once with a clear message (before, an empty file started it with
    authentication off, and a bad line printed part of the token)."""
    empty, bad = tmp_path / "empty", tmp_path / "bad"
    empty.write_text("# tokens go here\n")
    bad.write_text(f"worker:w\nadmin:{SECRET} trailing\n")
    for path, expected in ((empty, "holds no token"), (bad, f"{bad} line 2 (admin)")):
        run = subprocess.run(command("coordinator", "--listen", "127.0.0.1:0", "--data-dir", tmp_path / "data",
                                     "--tokens-file", path), capture_output=True, text=True, timeout=120)
        assert run.returncode != 0 and "listening on" not in run.stdout
        assert "refusing to start" in run.stderr and expected in run.stderr, run.stderr
        assert "s3cr3t" not in run.stderr + run.stdout


# -- who a call comes from ------------------------------------------------------------------------------------

async def _whoami(request, context):
    return repr(current_caller()).encode()


async def _whoami_stream(request, context):
    yield b"first"
    await asyncio.sleep(0)  # another call may run here: the caller is still this call's after a resumption
    yield repr(current_caller()).encode()


async def _whoami_upload(requests, context):
    return b"|".join([repr(current_caller()).encode() async for _ in requests])


@pytest.fixture
def whoami():
    """A real gRPC server (the coordinator's asyncio stack) whose methods answer current_caller()."""
    tokens = {"alice-token": Principal("annotator", "alice"), "shared-token": Principal("annotator"),
              "adm-token": "admin"}
    handlers = {"Who": grpc.unary_unary_rpc_method_handler(_whoami),
                "WhoStream": grpc.unary_stream_rpc_method_handler(_whoami_stream),
                "WhoUpload": grpc.stream_unary_rpc_method_handler(_whoami_upload)}

    async def start():
        server = create_server(interceptors=[TokenAuthInterceptor(tokens)])
        server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("aal.v1.AnnotationService", handlers),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": handlers["Who"]})))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = server_loop().run(start())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    channel.close()
    server_loop().run(server.stop(0))


def _as(token):
    return (("authorization", f"Bearer {token}"),)


def test_the_servicer_learns_the_callers_role_and_identity(whoami):
    who = whoami.unary_unary("/aal.v1.AnnotationService/Who")
    alice = b"Principal(role='annotator', identity='alice', delegates=False)"
    assert who(b"", metadata=_as("alice-token"), timeout=10) == alice
    assert who(b"", metadata=_as("shared-token"), timeout=10) == \
        b"Principal(role='annotator', identity=None, delegates=False)"
    assert who(b"", metadata=_as("adm-token"), timeout=10) == b"Principal(role='admin', identity=None, delegates=False)"
    stream = whoami.unary_stream("/aal.v1.AnnotationService/WhoStream")
    assert list(stream(b"", metadata=_as("alice-token"), timeout=10))[-1] == alice
    upload = whoami.stream_unary("/aal.v1.AnnotationService/WhoUpload")
    assert upload(iter([b"", b""]), metadata=_as("alice-token"), timeout=10) == alice + b"|" + alice
    # A call that needs no token has no caller: none lingers from the calls before.
    assert whoami.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10) == b"None"
    assert current_caller() is None


def test_a_client_with_a_token_but_no_tls_is_warned(caplog, tmp_path):
    caplog.set_level(logging.WARNING, logger="aal_rpc.security")
    ClientSecurity(token=SECRET)
    [record] = caplog.records
    assert "in the clear" in record.getMessage() and SECRET not in record.getMessage()
    caplog.clear()
    ClientSecurity(token=SECRET, ca=tmp_path / "ca.pem")
    ClientSecurity()
    assert caplog.records == []
