"""The one way into fhirpathpy: compiling with the R4 model (so choice elements such as
``Observation.value`` resolve), a strict syntax check (fhirpathpy's parser recovers from errors)
and evaluation under one lock. fhirpathpy keeps evaluation state in module globals, so every
caller in the process (search index extraction, FHIRPath Patch) must share this lock: hence
one adapter, `fhirpath()`, made on first use."""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable

import fhirpathpy
from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

__all__ = ["FhirPath", "FhirPathSyntaxError", "ResourceNode", "fhirpath"]


class FhirPathSyntaxError(ValueError):
    """Not a FHIRPath expression; the message says where."""


class _Raise(ErrorListener):
    def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):  # noqa: ANN001, N802
        raise FhirPathSyntaxError(f"{msg} (at column {column})")


class FhirPath:
    """Compiled expressions (cached) and serialised evaluation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model = models["r4"]
        self.compile = functools.lru_cache(maxsize=2048)(self._compile)  # expressions come from clients: bounded

    @staticmethod
    def check_syntax(expression: str) -> None:
        """FhirPathSyntaxError unless the whole of `expression` parses."""
        lexer = FHIRPathLexer(InputStream(expression))
        lexer.removeErrorListeners()
        lexer.addErrorListener(_Raise())
        parser = FHIRPathParser(CommonTokenStream(lexer))
        parser.removeErrorListeners()
        parser.addErrorListener(_Raise())
        parser.entireExpression()

    def _compile(self, expression: str, raw: bool = False, strict: bool = False) -> Callable[..., Any]:
        """`raw`: results are fhirpathpy's nodes (which know their location in the resource);
        `strict`: check the syntax first."""
        if strict:
            self.check_syntax(expression)
        options = {"returnRawData": True} if raw else None
        return fhirpathpy.compile(expression, self._model, options=options) if options else \
            fhirpathpy.compile(expression, self._model)

    def evaluate(self, fn: Callable[..., Any], resource: Any, env: dict[str, Any] | None = None) -> list[Any]:
        with self._lock:
            result = fn(resource, env) if env is not None else fn(resource)
            if result is None:
                return []
            return list(result) if isinstance(result, (list, tuple)) else [result]


@functools.cache
def fhirpath() -> FhirPath:
    """The process's adapter (one lock for fhirpathpy's process-wide state)."""
    return FhirPath()
