# In production namespaces an edit may move the canary weight by at most max_weight_step points.
package autoglm.admission.canary_weight_step

import data.autoglm.admission.lib

# Only an edit of the weight of a canary that stays counts: removing spec.canary (a promotion, or
# abandoning the canary) and introducing a new one are not weight steps.
max_step := object.get(data.autoglm.config, "max_weight_step", 25)

violation contains {"field": "spec.canary.weight", "message": msg} if {
	input.operation == "UPDATE"
	lib.is_production
	input.old_object.spec.canary
	lib.spec.canary
	old := object.get(input.old_object.spec.canary, "weight", 0)
	new := object.get(lib.spec.canary, "weight", 0)
	step := abs(new - old)
	step > max_step
	msg := sprintf("moves the canary weight from %d to %d (%d points) in a production namespace; change it by at most %d points per edit", [old, new, step, max_step])
}
