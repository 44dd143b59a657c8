"""Python-backend model sources the build copies into the repository (not imported by the project)."""
