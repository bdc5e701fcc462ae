"""What the operator says about a resource as core/v1 Events."""

#: (type, reason, message): type is ``Normal`` or ``Warning``; reason is CamelCase, as ``kubectl describe`` lists it.
Event = tuple[str, str, str]
