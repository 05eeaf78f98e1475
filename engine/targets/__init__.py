"""Deploy targets past the local box: other modeldeck servers, vLLM LoRA hot-loading, commands,
Ray Serve applications.

Every kind implements the same small driver interface (engine.targets.base.TargetDriver); the
deploy flow around it — lock, pending record, gate, automatic rollback — is shared
(engine.targets.flow) and is the same for every kind.
"""
