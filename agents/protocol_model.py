"""The base of servelm's protocol types: pydantic v2 models with the helpers MLflow's types have.

``to_dict()`` / ``from_dict()`` (MLflow's ``mlflow.types.llm`` dataclasses) and ``model_dump_compat()``
(MLflow's agent types) work on every type, and ``from_attributes`` lets a field take an object of the same
shape from another library (an ``mlflow.types.agent.ChatAgentMessage`` where a servelm one is expected).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ProtocolModel(BaseModel):
    """pydantic BaseModel plus MLflow's helper names; objects of other classes are read by attribute."""

    model_config = ConfigDict(from_attributes=True)

    def to_dict(self) -> dict[str, Any]:
        """The object as a JSON-ready dict, None fields left out (MLflow's ``to_dict``)."""
        return self.model_dump(exclude_none=True)

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        """Build from a dict (or an object of the same shape), as MLflow's ``from_dict``."""
        return cls.model_validate(data)

    def model_dump_compat(self, **kwargs: Any) -> dict[str, Any]:
        """``model_dump`` under the name MLflow's agent examples use."""
        return self.model_dump(**kwargs)
