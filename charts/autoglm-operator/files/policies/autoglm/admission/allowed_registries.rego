# Triton images come from allowed registries and are pinned (no :latest, no missing tag).
package autoglm.admission.allowed_registries

import data.autoglm.admission.lib

image := object.get(lib.spec, ["runtime", "image"], "")

violation contains {"field": "spec.runtime.image", "message": msg} if {
	not startswith_any(image, data.autoglm.config.allowed_registries)
	msg := sprintf("image %q is not from an allowed registry (%s); push it to one of them or ask the platform team to allow its registry", [image, concat(", ", data.autoglm.config.allowed_registries)])
}

violation contains {"field": "spec.runtime.image", "message": msg} if {
	not contains(image, "@")
	tag := image_tag(image)
	tag == "latest"
	msg := sprintf("image %q uses the :latest tag; pin a version tag or a digest so every pod runs the same server", [image])
}

violation contains {"field": "spec.runtime.image", "message": msg} if {
	not contains(image, "@")
	image_tag(image) == ""
	msg := sprintf("image %q has no tag; pin a version tag (e.g. :24.08-py3) or a digest", [image])
}

startswith_any(s, prefixes) if {
	some p in prefixes
	startswith(s, p)
}

# The tag is what follows the last ":" after the last "/" (a registry port is not a tag).
image_tag(img) := tag if {
	parts := split(img, "/")
	last := parts[count(parts) - 1]
	contains(last, ":")
	tag := split(last, ":")[1]
}

image_tag(img) := "" if {
	parts := split(img, "/")
	not contains(parts[count(parts) - 1], ":")
}
