"""The chat page at ``/`` and its static files at ``/static/{name}``."""
