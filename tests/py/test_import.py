import labctl


def test_version_is_the_build_version():
    parts = labctl.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)
