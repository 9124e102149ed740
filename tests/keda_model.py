"""A model of KEDA's documented ``ScaledObject`` and ``TriggerAuthentication`` (keda.sh/v1alpha1).

Written here from KEDA's reference pages (keda.sh/docs/2.15: "ScaledObject
specification", "AWS SQS Queue" scaler, "AWS (IRSA) Pod Identity Webhook"
authentication provider), not copied from KEDA's CRD: only the fields pixfleet
renders and their neighbours, with the types and required fields the docs give.
Unknown fields are refused (``extra="forbid"``), so a misspelt key fails here
as it would be silently ignored by KEDA.

What the docs say and this model keeps:

* ``spec.scaleTargetRef.name`` is mandatory (``apiVersion``/``kind`` default to
  apps/v1 Deployment); ``pollingInterval``, ``cooldownPeriod``,
  ``minReplicaCount``, ``maxReplicaCount`` are integers; ``triggers`` is required.
* ``advanced.horizontalPodAutoscalerConfig.behavior`` is the HPA v2 behavior.
* ``aws-sqs-queue`` metadata is a map of *strings*: ``queueURL`` or
  ``queueURLFromEnv`` (one required), ``queueLength`` (default "5"),
  ``activationQueueLength`` (default "0"), ``scaleOnInFlight`` (default
  "true"), ``scaleOnDelayed`` (default "false"), ``awsRegion`` (required),
  ``awsEndpoint``, and the deprecated ``identityOwner`` (pod | operator).
* ``TriggerAuthentication.spec.podIdentity.provider`` for AWS is ``aws``, with
  ``roleArn`` *or* ``identityOwner`` (keda | workload), never both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator

API_VERSION = "keda.sh/v1alpha1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: StrictStr
    namespace: StrictStr | None = None
    labels: dict[str, StrictStr] | None = None
    annotations: dict[str, StrictStr] | None = None


class ScaleTargetRef(_Strict):
    name: StrictStr
    apiVersion: StrictStr = "apps/v1"
    kind: StrictStr = "Deployment"
    envSourceContainerName: StrictStr | None = None


class ScalingPolicy(_Strict):
    type: Literal["Pods", "Percent"]
    value: StrictInt
    periodSeconds: StrictInt


class ScalingRules(_Strict):
    stabilizationWindowSeconds: Annotated[int, Field(strict=True, ge=0, le=3600)] | None = None
    selectPolicy: Literal["Max", "Min", "Disabled"] | None = None
    policies: list[ScalingPolicy] | None = None


class Behavior(_Strict):
    scaleUp: ScalingRules | None = None
    scaleDown: ScalingRules | None = None


class HorizontalPodAutoscalerConfig(_Strict):
    name: StrictStr | None = None
    behavior: Behavior | None = None


class Advanced(_Strict):
    restoreToOriginalReplicaCount: bool | None = None
    horizontalPodAutoscalerConfig: HorizontalPodAutoscalerConfig | None = None


class AuthenticationRef(_Strict):
    name: StrictStr
    kind: Literal["TriggerAuthentication", "ClusterTriggerAuthentication"] | None = None


_BOOL_STRINGS = ("true", "false")


class AwsSqsQueueMetadata(_Strict):
    """The ``aws-sqs-queue`` scaler's metadata: every value a string, as KEDA's map[string]string."""

    queueURL: StrictStr | None = None
    queueURLFromEnv: StrictStr | None = None
    queueLength: StrictStr = "5"
    activationQueueLength: StrictStr = "0"
    scaleOnInFlight: StrictStr = "true"
    scaleOnDelayed: StrictStr = "false"
    awsRegion: StrictStr
    awsEndpoint: StrictStr | None = None
    identityOwner: Literal["pod", "operator"] | None = None

    @field_validator("queueLength", "activationQueueLength")
    @classmethod
    def _number(cls, value: str) -> str:
        if not value.isdigit():
            raise ValueError(f"must be a whole number in a string, got {value!r}")
        return value

    @field_validator("scaleOnInFlight", "scaleOnDelayed")
    @classmethod
    def _boolean(cls, value: str) -> str:
        if value not in _BOOL_STRINGS:
            raise ValueError(f"must be 'true' or 'false', got {value!r}")
        return value

    @model_validator(mode="after")
    def _queue(self) -> AwsSqsQueueMetadata:
        if not self.queueURL and not self.queueURLFromEnv:
            raise ValueError("one of queueURL and queueURLFromEnv is required")
        return self


class Trigger(_Strict):
    type: StrictStr
    name: StrictStr | None = None
    metadata: dict[str, Any]
    authenticationRef: AuthenticationRef | None = None
    metricType: Literal["AverageValue", "Value", "Utilization"] | None = None

    @model_validator(mode="after")
    def _known_metadata(self) -> Trigger:
        if self.type == "aws-sqs-queue":
            AwsSqsQueueMetadata.model_validate(self.metadata)
        return self


class ScaledObjectSpec(_Strict):
    scaleTargetRef: ScaleTargetRef
    pollingInterval: StrictInt = 30
    cooldownPeriod: StrictInt = 300
    initialCooldownPeriod: StrictInt | None = None
    idleReplicaCount: StrictInt | None = None
    minReplicaCount: StrictInt = 0
    maxReplicaCount: StrictInt = 100
    advanced: Advanced | None = None
    triggers: Annotated[list[Trigger], Field(min_length=1)]

    @model_validator(mode="after")
    def _range(self) -> ScaledObjectSpec:
        if self.minReplicaCount > self.maxReplicaCount:
            raise ValueError("minReplicaCount must not exceed maxReplicaCount")
        return self


class ScaledObject(_Strict):
    apiVersion: Literal["keda.sh/v1alpha1"]
    kind: Literal["ScaledObject"]
    metadata: ObjectMeta
    spec: ScaledObjectSpec


class PodIdentity(_Strict):
    provider: Literal["none", "azure-workload", "gcp", "aws", "aws-eks"]
    roleArn: StrictStr | None = None
    identityOwner: Literal["keda", "workload"] | None = None

    @model_validator(mode="after")
    def _exclusive(self) -> PodIdentity:
        if self.roleArn is not None and self.identityOwner is not None:
            raise ValueError("podIdentity.roleArn and podIdentity.identityOwner are mutually exclusive")
        return self


class SecretTargetRef(_Strict):
    parameter: StrictStr
    name: StrictStr
    key: StrictStr


class TriggerAuthenticationSpec(_Strict):
    podIdentity: PodIdentity | None = None
    secretTargetRef: list[SecretTargetRef] | None = None

    @model_validator(mode="after")
    def _some(self) -> TriggerAuthenticationSpec:
        if self.podIdentity is None and not self.secretTargetRef:
            raise ValueError("a TriggerAuthentication needs podIdentity or secretTargetRef")
        return self


class TriggerAuthentication(_Strict):
    apiVersion: Literal["keda.sh/v1alpha1"]
    kind: Literal["TriggerAuthentication"]
    metadata: ObjectMeta
    spec: TriggerAuthenticationSpec


MODELS: dict[str, type[BaseModel]] = {"ScaledObject": ScaledObject, "TriggerAuthentication": TriggerAuthentication}


def validate(manifest: dict[str, Any]) -> BaseModel:
    """Validate one KEDA manifest by its kind; raises pydantic's ``ValidationError``."""
    return MODELS[manifest["kind"]].model_validate(manifest)
