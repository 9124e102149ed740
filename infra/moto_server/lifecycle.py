"""S3 lifecycle rules that abort incomplete multipart uploads, applied by the emulator (runs inside moto).

moto stores a bucket's lifecycle configuration but never acts on it, and does not record when a multipart
upload was initiated. This patch records the time and, once a second, aborts every multipart upload whose
bucket has an enabled ``AbortIncompleteMultipartUpload`` rule matching its key and that is older than the
rule's ``DaysAfterInitiation``. A "day" lasts ``PIXFLEET_EMULATOR_DAY_SECONDS`` seconds (default 86400, as on
S3), so tests can watch a one-day rule act within seconds.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

DAY_SECONDS_ENV = "PIXFLEET_EMULATOR_DAY_SECONDS"


def install_multipart_lifecycle(interval: float = 1.0) -> None:
    from moto.s3.models import FakeMultipart

    if getattr(FakeMultipart, "pixfleet_initiated", False):
        return
    day = float(os.environ.get(DAY_SECONDS_ENV) or 86400)
    original_init = FakeMultipart.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.pixfleet_initiated_at = time.time()

    FakeMultipart.__init__ = init  # type: ignore[method-assign]
    FakeMultipart.pixfleet_initiated = True  # type: ignore[attr-defined]

    def sweep_forever() -> None:
        while True:
            time.sleep(interval)
            try:
                sweep(day)
            except Exception:
                continue

    threading.Thread(target=sweep_forever, name="s3-lifecycle", daemon=True).start()


def _rule_prefix(rule: Any) -> str:
    if rule.prefix is not None:
        return str(rule.prefix)
    lc_filter = getattr(rule, "filter", None)
    return str(getattr(lc_filter, "prefix", None) or "")


def sweep(day_seconds: float) -> int:
    """Abort the multipart uploads that the buckets' lifecycle rules say are too old; how many."""
    from moto.s3.models import s3_backends

    now, aborted = time.time(), 0
    for account in list(s3_backends.values()):
        for backend in list(account.values()):
            for bucket in list(backend.buckets.values()):
                rules = [r for r in bucket.rules if r.status == "Enabled" and r.aimu_days]
                for upload_id, upload in list(bucket.multiparts.items()):
                    started = getattr(upload, "pixfleet_initiated_at", now)
                    expired = any(
                        upload.key_name.startswith(_rule_prefix(rule))
                        and now - started >= float(rule.aimu_days or 0) * day_seconds
                        for rule in rules
                    )
                    if expired:
                        bucket.multiparts.pop(upload_id, None)
                        aborted += 1
    return aborted
