"""Deploy, rollback, history and audit."""

from __future__ import annotations

import pytest


@pytest.fixture
def two_versions(cli, tiny_model_dir, tiny_model_dir_b):
    cli("models", "import", str(tiny_model_dir), "--name", "tiny")
    cli("models", "import", str(tiny_model_dir_b), "--name", "tiny")


def test_deploy_then_rollback_toggles_like_kubectl(cli, two_versions):
    assert cli("deploy", "tiny@1", "--yes", "--reason", "first").code == 0
    assert cli("deploy", "tiny@2", "--yes").code == 0
    back = cli("rollback", "--yes", "--json")
    assert back.code == 0, back
    assert back.json["chosen"]["version"] == 1
    assert back.json["current"]["version"] == 2
    forward = cli("rollback", "--yes", "--json")
    assert forward.json["chosen"]["version"] == 2
    history = cli("history", "--json").json["entries"]
    assert [(e["action"], e["version"]) for e in history] == [
        ("rollback", 2), ("rollback", 1), ("deploy", 2), ("deploy", 1)]
    assert history[-1]["reason"] == "first"


def test_rollback_to_named_version(cli, two_versions):
    cli("deploy", "tiny@2", "--yes")
    result = cli("rollback", "--to", "1", "--yes", "--json")
    assert result.json["chosen"]["ref"] == "tiny@1"
    assert cli("status", "--json").json["deployments"][0]["version"] == 1


def test_redeploying_the_serving_version_changes_nothing(cli, two_versions):
    cli("deploy", "tiny@1", "--yes")
    again = cli("deploy", "tiny@1", "--yes", "--json")
    assert again.code == 0
    assert again.json["changed"] is False
    assert len(cli("history", "--json").json["entries"]) == 1


def test_every_action_is_audited(cli, two_versions):
    cli("models", "alias", "tiny@1", "staging")
    cli("deploy", "tiny@1", "--yes", "--reason", "canary")
    cli("rollback", "--to", "2", "--yes")
    entries = cli("audit", "--json").json["entries"]
    verbs = [e["verb"] for e in entries]
    assert verbs == ["rollback", "deploy", "alias", "import", "import"]
    deploy_entry = entries[1]
    assert deploy_entry["arguments"]["ref"] == "tiny@1"
    assert deploy_entry["reason"] == "canary"
    # No server ran (the tests turn autostart off), so the move was never gated: the audit says
    # what its history row says, pending, not the 'ok' written when the pointer moved.
    assert deploy_entry["result"] == "pending"
    assert deploy_entry["user"]
    assert deploy_entry["history_id"] is not None


def test_destructive_verbs_need_yes_without_a_terminal(cli, two_versions):
    result = cli("deploy", "tiny@1")  # pytest's stdin is not a terminal
    assert result.code == 2
    assert "--yes" in result.stderr
    assert cli("history", "--json").json["entries"] == []


def test_rollback_with_nothing_before(cli, two_versions):
    cli("deploy", "tiny@1", "--yes")
    result = cli("rollback", "--yes")
    assert result.code == 2
    assert "no earlier deployment" in result.stderr


def test_unknown_target(cli, two_versions):
    result = cli("deploy", "tiny@1", "--target", "prod-eu", "--yes")
    assert result.code == 2
    assert "unknown target 'prod-eu'" in result.stderr
    assert cli("audit", "--verb", "deploy", "--json").json["entries"] == []


def test_configured_target_is_accepted(cli, two_versions, deck_home, monkeypatch, tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):  # a command target's gate needs something to probe
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("X-Model-Version", "tiny@2")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "deck.toml"
    config.write_text('[[targets]]\nname = "edge"\nkind = "command"\n'
                      f'health_url = "http://127.0.0.1:{server.server_address[1]}/health"\n'
                      'deploy_command = ["true"]\nrollback_command = ["true"]\n')
    monkeypatch.setenv("MODELDECK_CONFIG", str(config))
    try:
        result = cli("deploy", "tiny@2", "--target", "edge", "--yes", "--json")
    finally:
        server.shutdown()
        server.server_close()
    assert result.code == 0, result
    assert cli("history", "--target", "edge", "--json").json["entries"][0]["version"] == 2


def test_rejected_version_needs_force(cli, deck, two_versions):
    deck.registry.db.execute("UPDATE versions SET status='rejected' WHERE version=2")
    refused = cli("deploy", "tiny@2", "--yes")
    assert refused.code == 2 and "--force" in refused.stderr
    assert cli("deploy", "tiny@2", "--yes", "--force").code == 0
