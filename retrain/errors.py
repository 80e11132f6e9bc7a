"""The exception root of the retrain package and its specific failures."""


class RetrainError(Exception):
    """Root of every error raised by ``retrain``."""


class TrainingDataError(RetrainError):
    """The labelled data cannot make an honest training set (empty, one class, unknown labels)."""


class ModelArtifactError(RetrainError):
    """A registered model's artifact is missing, corrupt or cannot be loaded."""


class RegistryUnavailable(RetrainError):
    """The MLflow tracking server or registry backend does not answer."""


class NoChampionError(RetrainError):
    """The registry has no ``champion`` (run the bootstrap first) or nothing to roll back to."""


class TrainingFailed(RetrainError):
    """Fine-tuning crashed; nothing was registered and the champion is unchanged."""


class PromotionError(RetrainError):
    """Moving the ``champion`` alias failed; the previous champion is still served."""
