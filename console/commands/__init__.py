"""Headless verbs, one module per family. Each module exposes `register(subparsers, common)`.

Nothing here imports textual: these paths must stay fast and usable without a terminal UI.

VERB_MODULES names the module that registers each verb, in the order `modeldeck --help` lists
them, so a run imports only its own verb's module (and, through it, only the engine actions it
calls): `modeldeck status` does not import the fleet client or the fine-tune settings.
tests/test_cli_boundary.py checks every module registers exactly the verbs named here.
"""

VERB_MODULES: dict[str, str] = {
    "models": "console.commands.registry_cmds",
    "demo": "console.commands.registry_cmds",
    "deploy": "console.commands.deploy_cmds",
    "rollback": "console.commands.deploy_cmds",
    "history": "console.commands.deploy_cmds",
    "audit": "console.commands.deploy_cmds",
    "rollout": "console.commands.rollout_cmds",
    "serve": "console.commands.serve_cmds",
    "status": "console.commands.status_cmds",
    "targets": "console.commands.target_cmds",
    "finetune": "console.commands.job_cmds",
    "jobs": "console.commands.job_cmds",
    "compress": "console.commands.compress_cmds",
    "watch": "console.commands.telemetry_cmds",
    "endpoints": "console.commands.telemetry_cmds",
    "alerts": "console.commands.alert_cmds",
    "monitor": "console.commands.alert_cmds",
    "record": "console.commands.record_cmds",
    "fleet": "console.commands.fleet_cmds",
}
COMMAND_MODULES = tuple(dict.fromkeys(VERB_MODULES.values()))
