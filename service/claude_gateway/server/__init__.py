"""The process: Gunicorn with uvicorn workers, the HTTP protocol's bounds, garbage-collector tuning."""
