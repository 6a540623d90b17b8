"""Generated parts of README.md (supported ops, architecture presets).

    python -m cimc.docs            # rewrite the generated blocks of README.md
    python -m cimc.docs --check    # exit 1 when README.md is out of date (a test runs this)

Each block sits between `<!-- BEGIN generated:NAME ... -->` and `<!-- END generated:NAME -->`
markers and is produced from the registries (op classes, quantize rules, backend
lowerings, importer tables, isa/arch presets), so the README cannot drift from the code.
"""
