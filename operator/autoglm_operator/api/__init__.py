"""The AutoGLMDeployment resource as Python types: parsing, defaults, and validation the CRD cannot express."""
