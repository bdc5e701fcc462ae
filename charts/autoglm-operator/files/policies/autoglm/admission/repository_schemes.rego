# Model repositories only from the URI schemes allowed in this namespace.
package autoglm.admission.repository_schemes

import data.autoglm.admission.lib

violation contains {"field": "spec.model.repository.uri", "message": msg} if {
	uri := object.get(lib.spec, ["model", "repository", "uri"], "")
	scheme := split(uri, "://")[0]
	allowed := lib.per_namespace(data.autoglm.config.allowed_uri_schemes)
	not scheme in allowed
	msg := sprintf("scheme %q is not allowed in namespace %s; use one of %s", [scheme, input.namespace.name, concat(", ", [sprintf("%s://", [s]) | some s in allowed])])
}
