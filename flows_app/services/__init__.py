"""The flow engine's business logic, as plain keyword-only functions."""
