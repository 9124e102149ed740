"""pixfleet's moto server: moto's own server plus the patches that make it behave like AWS where pixfleet needs it.

``python -m infra.moto_server -H HOST -p PORT`` (what :class:`infra.emulator.MotoServer` starts, and the
``pixfleet/moto`` image runs) installs, into moto:

* :mod:`.presigned` — presigned S3 URLs and browser POST uploads authorized under IAM enforcement;
* :mod:`.sqs_move_tasks` — SQS ``StartMessageMoveTask`` / ``ListMessageMoveTasks`` / ``CancelMessageMoveTask``
  (dead-letter redrive);
* :mod:`.lifecycle` — ``AbortIncompleteMultipartUpload`` lifecycle rules, applied.

Each patch depends on moto's internals; pyproject pins moto to the minor version they are tested with.
This package runs only inside the emulator process; nothing else imports it.
"""

from __future__ import annotations


def install_all() -> None:
    from infra.moto_server.lifecycle import install_multipart_lifecycle
    from infra.moto_server.presigned import install_presigned_auth
    from infra.moto_server.sqs_move_tasks import install_sqs_message_move_tasks

    install_presigned_auth()
    install_sqs_message_move_tasks()
    install_multipart_lifecycle()
