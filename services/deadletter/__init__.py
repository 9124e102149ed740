"""The dead-letter recorder: every job whose message reaches the DLQ ends as ``failed``, never silently."""
