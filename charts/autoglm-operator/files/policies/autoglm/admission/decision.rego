# The decision the webhook asks for: every policy's violations, sorted by enforcement mode.
#   deny   -> refused, with the messages
#   warn   -> admitted, the messages come back as admission warnings (kubectl prints them)
#   dryrun -> admitted silently, reported in the decision (and counted by the webhook)
package autoglm.admission

import data.autoglm.admission.allowed_gpu_products
import data.autoglm.admission.allowed_registries
import data.autoglm.admission.canary_weight_step
import data.autoglm.admission.edge_fit
import data.autoglm.admission.engine_provenance
import data.autoglm.admission.gpu_quota
import data.autoglm.admission.production_rollback
import data.autoglm.admission.repository_schemes
import data.autoglm.admission.resource_limits

violations := {
	"allowed-registries": allowed_registries.violation,
	"gpu-quota": gpu_quota.violation,
	"allowed-gpu-products": allowed_gpu_products.violation,
	"resource-limits": resource_limits.violation,
	"repository-schemes": repository_schemes.violation,
	"canary-weight-step": canary_weight_step.violation,
	"production-rollback": production_rollback.violation,
	"edge-fit": edge_fit.violation,
	"engine-provenance": engine_provenance.violation,
}

# Enforcement comes from data; without data (or an unknown mode) a policy denies: a missing data
# file must never turn every policy off.
modes := {"deny", "warn", "dryrun"}

mode(id) := m if {
	m := data.autoglm.config.enforcement[id]
	m in modes
} else := m if {
	m := data.autoglm.config.enforcement_default
	m in modes
} else := "deny"

messages(wanted) := sort([sprintf("[%s] %s: %s", [id, v.field, v.message]) |
	some id, vs in violations
	mode(id) == wanted
	some v in vs
])

decision := {
	"allowed": count(messages("deny")) == 0,
	"denials": messages("deny"),
	"warnings": messages("warn"),
	"dryrun": messages("dryrun"),
}
