"""modeldeck's console: the Textual app and the headless CLI. Depends on engine, never the reverse."""
