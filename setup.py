"""Package layout: the checkout's top-level folders ``infer/`` and ``train/`` (and the shipped
``weights/`` and ``configs/``) install under the ``facenet3d`` namespace, so an installed wheel adds
one import name, ``facenet3d``, and carries its models and presets (see ``facenet3d/resources.py``)."""

from setuptools import find_packages, setup

#: Checkout folder -> installed package.
NAMESPACED = {"infer": "facenet3d.infer", "train": "facenet3d.train", "weights": "facenet3d.weights",
              "configs": "facenet3d.configs"}

packages = find_packages(include=["facenet3d", "facenet3d.*"])
package_dir = {}
for folder, package in NAMESPACED.items():
    package_dir[package] = folder
    packages.append(package)
    for sub in find_packages(folder):
        packages.append(f"{package}.{sub}")
        package_dir[f"{package}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
