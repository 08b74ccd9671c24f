"""(a) One database per worker: tests commit real data with fixed keys and count whole
tables. That is safe only because no other worker writes to this database, and because the
``db`` fixture empties it after each test."""

import pytest
from sqlalchemy import func, select, text

from shop import service
from shop.models import Order, Product, User


def test_this_worker_has_its_own_database(worker_engine, worker_id):
    with worker_engine.connect() as connection:
        name = connection.scalar(text("SELECT current_database()"))
    assert name == f"test_db_{worker_id}"


def test_register_user(db):
    user = service.register_user(db, "Alice@Example.com", "Alice")
    db.commit()
    assert user.email == "alice@example.com"
    assert db.scalar(select(func.count()).select_from(User)) == 1


def test_email_is_unique(db):
    service.register_user(db, "bob@example.com", "Bob")
    db.commit()
    with pytest.raises(service.ShopError, match="already registered"):
        service.register_user(db, "BOB@example.com", "Robert")


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13])
def test_catalog_size(db, count):
    for i in range(count):
        service.add_product(db, f"SKU-{i}", f"Product {i}", 100 * (i + 1))
    db.commit()
    # A whole-table count: another worker adding products here would break it.
    assert db.scalar(select(func.count()).select_from(Product)) == count


def test_paid_orders_add_up(db):
    user = service.register_user(db, "carol@example.com", "Carol")
    pen = service.add_product(db, "PEN", "Pen", 250)
    ink = service.add_product(db, "INK", "Ink", 1200)
    first = service.place_order(db, user, {pen: 4, ink: 1})
    second = service.place_order(db, user, {ink: 2})
    service.place_order(db, user, {pen: 1})  # left open: not counted
    service.pay(first)
    service.pay(second)
    db.commit()
    assert first.total_cents == 2200
    assert service.total_spent_cents(db, user) == 2200 + 2400
    assert db.scalar(select(func.count()).select_from(Order)) == 3


def test_price_change_keeps_old_orders(db):
    user = service.register_user(db, "dave@example.com", "Dave")
    mug = service.add_product(db, "MUG", "Mug", 900)
    order = service.place_order(db, user, {mug: 2})
    mug.price_cents = 1500
    db.commit()
    db.refresh(order)
    assert order.total_cents == 1800


def test_starts_empty(db):
    for model in (User, Product, Order):
        assert db.scalar(select(func.count()).select_from(model)) == 0
