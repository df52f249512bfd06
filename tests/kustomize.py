"""The part of kustomize that deploy/kubernetes uses, to render it offline
the way `kubectl kustomize` does (kubectl is not among the test tools).

Supported kustomization fields: resources (files and directories),
namespace and images. Any other field is an error rather than silently
ignored, so the manifests cannot outgrow what the tests render.
"""
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images"}
# kinds that take no namespace (among those a kustomization here may hold)
CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition"}


class KustomizeError(ValueError):
    pass


def build(directory) -> list:
    """The rendered objects of the kustomization in `directory`."""
    directory = Path(directory)
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{kfile}: fields this renderer does not implement: {sorted(unknown)}")
    objects = []
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        if path.is_dir():
            objects += build(path)
        elif path.is_file():
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        else:
            raise KustomizeError(f"{kfile}: resource {res!r} not found")
    if "namespace" in k:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for obj in objects:
            for container in _containers(obj):
                name, tag = _split_image(container.get("image", ""))
                if name != image["name"]:
                    continue
                name = image.get("newName", name)
                if "digest" in image:
                    container["image"] = f"{name}@{image['digest']}"
                else:
                    container["image"] = f"{name}:{image['newTag']}" if "newTag" in image \
                        else (f"{name}:{tag}" if tag else name)
    seen = set()
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"), obj["metadata"].get("namespace"),
               obj["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"{directory}: {key} defined twice")
        seen.add(key)
    return objects


def _containers(obj) -> list:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def _split_image(image: str) -> tuple:
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, ""
    return name, tag
