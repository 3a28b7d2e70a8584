"""Errors raised by the model format: one clear message that names the file or field at fault."""


class ModelFormatError(Exception):
    """A model directory cannot be saved or loaded (missing file, unknown flavor, broken code...)."""


class SchemaEnforcementError(ValueError):
    """Input does not match the model's signature; the message names the column/field and expected type."""
