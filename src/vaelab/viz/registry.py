"""Figures attached to model types from outside the models (dispatch on the class, as ``register_kl`` does).

``RUN_FIGURES``        fn(out, model, data, metrics_file) -> [paths]: what a finished run draws into RUN/figures; every
                       function along the model's class hierarchy draws its own figures (the most general first)
``LATENT_FIGURES``     fn(out, model, data) -> [paths]: ``vaelab latents`` (the nearest class's)
``TRAVERSAL_FIGURES``  fn(out, model, data, metrics_file, index) -> [paths]: ``vaelab traverse`` (the nearest class's)
``REPORT_FIGURES``     by report name, fn(out, report) -> [paths]: the figures of a report (``gaps``: ``vaelab gaps``)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vaelab.core.registry import Registry, TypeRegistry

Figures = Callable[..., list[Path]]

RUN_FIGURES: TypeRegistry[Figures] = TypeRegistry("run figures")
LATENT_FIGURES: TypeRegistry[Figures] = TypeRegistry("latent figures")
TRAVERSAL_FIGURES: TypeRegistry[Figures] = TypeRegistry("traversal figures")

#: report name -> fn(out_folder, report) -> [paths]: the figures of a report a command wrote (``vaelab gaps``)
REPORT_FIGURES: Registry[Callable[[Path, dict], list[Path]]] = Registry("report figure")
