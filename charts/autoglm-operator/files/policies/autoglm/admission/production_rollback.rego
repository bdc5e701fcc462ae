# In production namespaces a canary must keep automatic rollback on.
package autoglm.admission.production_rollback

import data.autoglm.admission.lib

violation contains {"field": "spec.rollback.enabled", "message": msg} if {
	lib.is_production
	lib.spec.canary
	object.get(lib.spec, ["rollback", "enabled"], true) == false
	msg := "automatic rollback must stay enabled for a canary in a production namespace; set spec.rollback.enabled: true"
}
