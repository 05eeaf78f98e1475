"""The embedded serving engine: loader, continuous-batching scheduler, OpenAI-compatible HTTP
server and Prometheus metrics (the run-state files under run/ are engine.runstate).

Nothing here imports torch at module level except the modules that only the server process
loads (loader, scheduler); `engine.runstate` stays light for the status path.
"""
