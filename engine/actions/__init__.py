"""The verbs. One function per verb: the TUI key, the command palette and the headless CLI all
build the same request and call the same function here. Nothing is implemented twice.

Each verb validates its whole request before writing anything (BadInput -> exit 2) and records
an audit row for what it changed. One module per family; everything is re-exported here, so
`from engine import actions; actions.deploy(...)` is how callers use them.

This is the top layer of the engine (pyproject's import-linter contracts): a verb may call any
layer below it, nothing below calls a verb.

Imports are lazy (PEP 562): `actions.status` loads engine/actions/status_report.py and what it
needs, not every verb's module with pydantic settings, httpx and the fleet client; `modeldeck
status` starts in a third of the time with no deck.toml (bench/status.py). The imports under
TYPE_CHECKING are the same names for mypy and readers; tests/test_import_rules.py checks the two
lists agree.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.actions.alerts import (AlertList, AlertsRequest, MonitorRequest, MonitorResult,
                                       alert_feed, alert_rules, alert_service, list_alerts, monitor,
                                       monitor_state)
    from engine.actions.compression import CompressRequest, CompressResult, compress
    from engine.actions.demo_deck import DemoResult, demo
    from engine.actions.discovery import DiscoverRequest, DiscoveryResult, discover_endpoints
    from engine.actions.deployments import (DeployPlan, DeployRequest, DeployResult, RollbackRequest,
                                            check_target, deploy, history, plan_deploy, plan_rollback,
                                            rollback)
    from engine.actions.jobs import (FinetuneRequest, JobRequest, JobResult, cancel_job, finetune,
                                     finetune_defaults, list_jobs, resume_job, show_job)
    from engine.actions.training import (MetricsRequest, RegisterCheckpointRequest, checkpoint_job,
                                         job_metrics, job_snapshot, list_checkpoints, register_checkpoint,
                                         stop_job)
    from engine.actions.registry import (AliasRequest, ImportRequest, ModelDetails, alias_model, audit,
                                         import_model, list_models, show_model)
    from engine.actions.rollouts import (RolloutRequest, RolloutResult, abort_rollout, pause_rollout,
                                         plan_rollout, resume_rollout, rollout, rollout_state,
                                         rollout_status)
    from engine.actions.server import rotate_control_token, serve, start_server, stop_server
    from engine.actions.status_report import StatusReport, local_server_state, status
    from engine.actions.targets import TargetSummary, check_targets, list_targets
    from engine.actions.telemetry import (CheckEndpointsRequest, EndpointInfo, EndpointsCheck,
                                          WatchRequest, check_endpoints, list_endpoints, watch)

# The module of each verb family and the names it exports.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "alerts": ("AlertList", "AlertsRequest", "MonitorRequest", "MonitorResult", "alert_feed",
        "alert_rules", "alert_service", "list_alerts", "monitor", "monitor_state"),
    "compression": ("CompressRequest", "CompressResult", "compress"),
    "demo_deck": ("DemoResult", "demo"),
    "discovery": ("DiscoverRequest", "DiscoveryResult", "discover_endpoints"),
    "deployments": ("DeployPlan", "DeployRequest", "DeployResult", "RollbackRequest",
        "check_target", "deploy", "history", "plan_deploy", "plan_rollback", "rollback"),
    "jobs": ("FinetuneRequest", "JobRequest", "JobResult", "cancel_job", "finetune",
        "finetune_defaults", "list_jobs", "resume_job", "show_job"),
    "training": ("MetricsRequest", "RegisterCheckpointRequest", "checkpoint_job", "job_metrics",
        "job_snapshot", "list_checkpoints", "register_checkpoint", "stop_job"),
    "registry": ("AliasRequest", "ImportRequest", "ModelDetails", "alias_model", "audit",
        "import_model", "list_models", "show_model"),
    "rollouts": ("RolloutRequest", "RolloutResult", "abort_rollout", "pause_rollout",
        "plan_rollout", "resume_rollout", "rollout", "rollout_state", "rollout_status"),
    "server": ("rotate_control_token", "serve", "start_server", "stop_server"),
    "status_report": ("StatusReport", "local_server_state", "status"),
    "targets": ("TargetSummary", "check_targets", "list_targets"),
    "telemetry": ("CheckEndpointsRequest", "EndpointInfo", "EndpointsCheck", "WatchRequest",
        "check_endpoints", "list_endpoints", "watch"),
}
_MODULE_OF_NAME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF_NAME)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF_NAME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
