"""A module-scoped fixture, a test class and the session fixtures from conftest.py."""

import pytest


@pytest.fixture(scope="module")
def inventory(catalog):
    """Set up once per module per worker: every test here gets the same object."""
    stock = {(colour, size): 10 for colour in catalog["colours"] for size in catalog["sizes"]}
    yield stock
    stock.clear()


def test_catalog_is_shared(catalog):
    assert catalog["colours"] == ["red", "green", "blue"]
    assert isinstance(catalog["built_by_pid"], int)


@pytest.mark.parametrize("colour", ["red", "green", "blue"])
@pytest.mark.parametrize("size", ["S", "M", "L"])
def test_every_variant_is_stocked(inventory, colour, size):
    assert inventory[(colour, size)] == 10


def test_module_fixture_is_reused(inventory):
    inventory[("red", "S")] -= 1
    inventory[("red", "S")] += 1
    assert len(inventory) == 9


class TestOrders:
    def test_order_within_stock(self, inventory):
        assert inventory[("green", "M")] >= 3

    def test_order_beyond_stock(self, inventory):
        assert not inventory[("blue", "L")] >= 11

    def test_label_names_the_worker(self, worker_label, worker_id):
        assert worker_label == f"example-{worker_id}"
