"""The core the services share: errors, job messages, manifests, AWS client helpers, base settings and the
transform engine. It imports nothing of pixfleet's above it (import-linter checks that)."""
