"""Early warning: the detector and incident lifecycle (pure), judging scopes after each batch, silences, and delivery of notifications (Redis, Apprise)."""
