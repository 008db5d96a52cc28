"""Step outputs as the runner reads them from GITHUB_OUTPUT."""


def parse_file_command(text):
    """GITHUB_OUTPUT as the runner parses it: `name=value` lines and `name<<DELIM` ... `DELIM` blocks."""
    values, lines, index = {}, text.split("\n"), 0
    lines = [line.removesuffix("\r") for line in lines]
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line:
            continue
        equals, heredoc = line.find("="), line.find("<<")
        # Whichever of '=' and '<<' comes first decides the form, as in the runner.
        if equals > 0 and (heredoc < 0 or equals < heredoc):
            values[line[:equals]] = line[equals + 1:]
        elif heredoc > 0:
            name, delimiter = line[:heredoc], line[heredoc + 2:]
            if delimiter not in lines[index:]:
                raise ValueError(f"GITHUB_OUTPUT: matching delimiter not found for {name!r}: {delimiter!r}")
            end = lines.index(delimiter, index)
            values[name], index = "\n".join(lines[index:end]), end + 1
        else:
            raise ValueError(f"GITHUB_OUTPUT: invalid line {line!r}")
    return values
