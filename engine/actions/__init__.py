"""The verbs. One function per verb: the TUI key, the command palette and the headless CLI all
build the same request and call the same function here. Nothing is implemented twice.

Each verb validates its whole request before writing anything (BadInput -> exit 2) and records
an audit row for what it changed. One module per family; everything is re-exported here, so
`from engine import actions; actions.deploy(...)` is how callers use them.

This is the top layer of the engine (pyproject's import-linter contracts): a verb may call any
layer below it, nothing below calls a verb.
"""

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

__all__ = [
    "AlertList", "AlertsRequest", "MonitorRequest", "MonitorResult", "alert_feed", "alert_rules",
    "alert_service", "list_alerts", "monitor", "monitor_state",
    "AliasRequest", "CheckEndpointsRequest", "DiscoverRequest", "DiscoveryResult",
    "discover_endpoints", "CompressRequest", "CompressResult", "DemoResult",
    "DeployPlan", "DeployRequest", "DeployResult", "EndpointInfo", "EndpointsCheck",
    "FinetuneRequest", "ImportRequest", "JobRequest", "JobResult", "ModelDetails",
    "RollbackRequest", "RolloutRequest", "RolloutResult", "StatusReport", "TargetSummary", "WatchRequest", "alias_model", "audit",
    "cancel_job", "check_endpoints", "check_target", "check_targets", "compress", "demo", "deploy",
    "finetune", "finetune_defaults", "history", "import_model", "list_endpoints", "list_jobs", "list_models",
    "list_targets", "local_server_state", "plan_deploy", "plan_rollback", "resume_job",
    "abort_rollout", "pause_rollout", "plan_rollout", "resume_rollout", "rollout", "rollout_state", "rollout_status",
    "rotate_control_token", "serve", "show_job", "show_model", "start_server", "status",
    "stop_server", "watch", "MetricsRequest", "RegisterCheckpointRequest", "checkpoint_job",
    "job_metrics", "job_snapshot", "list_checkpoints", "register_checkpoint", "stop_job",
]
