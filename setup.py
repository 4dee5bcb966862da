"""The one build step pyproject.toml cannot declare in a stable way: the edge's C encoder.

``edge._clickfast`` (edge/clickencoder.py says why it exists) is optional: where no C compiler is
found the install still succeeds, and the edge uses the same encoder in Python, slower. Everything
else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "edge._clickfast",
            sources=["edge/_clickfast.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
