"""The dashboard's panes: each renders only the view models it is given (console.data)."""
