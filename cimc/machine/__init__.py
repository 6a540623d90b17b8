"""The CIM machine: program data model, opcode table, parser, printer, validator, interpreter."""
