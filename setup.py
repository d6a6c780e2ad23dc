"""Only a build hook; all metadata is in pyproject.toml.

The report template's source of truth is the top-level ``viz/`` folder (HTML, CSS and JS people edit in one place).
``build_py`` copies it into the built package as ``archgraph/viz``, so a wheel (and any non-editable install) ships
it as package data; an editable install or a plain checkout reads ``viz/`` next to the package instead (see
``archgraph.history.report.template_dir``).
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class build_py_with_viz(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the package is imported from the checkout, which has viz/ beside it
        target = Path(self.build_lib) / "archgraph" / "viz"
        target.mkdir(parents=True, exist_ok=True)
        for src in sorted((ROOT / "viz").iterdir()):
            if src.is_file():
                self.copy_file(str(src), str(target / src.name))


setup(cmdclass={"build_py": build_py_with_viz})
