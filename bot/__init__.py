"""sms-bot core: configuration, message model, engine, store, surfaces and adapters.

Nothing in this package knows a runbook procedure by name; procedures live in
``procedures/`` and entry points in ``handlers/``.
"""

__all__: list[str] = []
