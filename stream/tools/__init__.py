"""Developer tools around the worker: replay and record topics, the embedded broker and redis-server."""
