# Every image a Triton pod runs comes from an allowed registry and is pinned: the server image
# (spec.runtime.image), a model shipped as an OCI image (spec.model.repository.uri oci://...) and
# the image engine build Jobs run (spec.model.build.image, spec.canary.build.image), and the
# platform's images the pods would run for the spec (input.platform_images: the s3:// and gs://
# copy steps), so a platform image outside the allowed registries is refused like a tenant's.
# No :latest in any letter case, no missing tag; with require_digest, a digest (@sha256:...).
package autoglm.admission.allowed_registries

import data.autoglm.admission.lib

require_digest := object.get(data.autoglm.config, "require_digest", false)

images contains {"field": "spec.runtime.image", "image": image} if {
	image := object.get(lib.spec, ["runtime", "image"], "")
}

images contains {"field": "spec.model.repository.uri", "image": substring(uri, 6, -1)} if {
	uri := object.get(lib.spec, ["model", "repository", "uri"], "")
	startswith(uri, "oci://")
}

images contains {"field": sprintf("spec.%s.build.image", [section]), "image": image} if {
	some section in ["model", "canary"]
	image := lib.spec[section].build.image
}

images contains {"field": i.field, "image": i.image} if {
	some i in object.get(input, "platform_images", [])
}

violation contains {"field": i.field, "message": msg} if {
	some i in images
	not startswith_any(i.image, data.autoglm.config.allowed_registries)
	msg := sprintf("image %q is not from an allowed registry (%s); push it to one of them or ask the platform team to allow its registry", [i.image, concat(", ", data.autoglm.config.allowed_registries)])
}

violation contains {"field": i.field, "message": msg} if {
	some i in images
	not contains(i.image, "@")
	lower(image_tag(i.image)) == "latest"
	msg := sprintf("image %q uses the %q tag; pin a version tag or a digest so every pod runs the same thing", [i.image, image_tag(i.image)])
}

violation contains {"field": i.field, "message": msg} if {
	some i in images
	not contains(i.image, "@")
	image_tag(i.image) == ""
	msg := sprintf("image %q has no tag; pin a version tag (e.g. :24.08-py3) or a digest", [i.image])
}

violation contains {"field": i.field, "message": msg} if {
	require_digest
	some i in images
	not contains(i.image, "@sha256:")
	msg := sprintf("image %q is not pinned by digest, which this cluster requires; use name@sha256:<digest>", [i.image])
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
