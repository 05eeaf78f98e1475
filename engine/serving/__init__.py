"""The embedded serving engine: loader, continuous-batching scheduler, OpenAI-compatible HTTP
server, Prometheus metrics and the run-state files under the deck home's run/.

Nothing here imports torch at module level except the modules that only the server process
loads (loader, scheduler); `engine.runstate` stays light for the status path.
"""
