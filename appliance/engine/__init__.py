"""The engine: the one process that owns the model, the printer, the chat history and the
queue (teletype-engine.service, `teletype serve`). Every trigger is a client of its API.
"""
