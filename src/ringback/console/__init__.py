"""The staff console (`ringback console`): the callback task queue as a web page, per practice.

See `app.py` for the routes, `docs/console.md` for running it, `openapi.yaml` for the API.
"""
