"""(c) One shared database, unique data: every worker (and every earlier run) writes to the
same tables, so each test makes its own rows under keys nobody else uses (a fresh uuid) and
looks only at those. No test counts a whole table or expects it to be empty."""

import uuid

import pytest
from sqlalchemy import select

from shop import service
from shop.models import Order


def _unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex}"


@pytest.fixture
def customer(shared_session):
    user = service.register_user(shared_session, f"{_unique('customer')}@example.com", "Customer")
    shared_session.commit()
    return user


@pytest.fixture
def product(shared_session):
    product = service.add_product(shared_session, _unique("SKU"), "Notebook", 350)
    shared_session.commit()
    return product


@pytest.mark.parametrize("quantity", [1, 2, 3, 4, 5, 6])
def test_order_for_a_fresh_customer(shared_session, customer, product, quantity):
    order = service.place_order(shared_session, customer, {product: quantity})
    service.pay(order)
    shared_session.commit()
    # Only this customer's orders: other tests' customers are none of this test's business.
    orders = shared_session.scalars(select(Order).where(Order.user_id == customer.id)).all()
    assert [o.id for o in orders] == [order.id]
    assert service.total_spent_cents(shared_session, customer) == 350 * quantity


def test_registering_twice_is_refused(shared_session, customer):
    with pytest.raises(service.ShopError, match="already registered"):
        service.register_user(shared_session, customer.email.upper(), "Again")


def test_customers_do_not_share_orders(shared_session, product):
    alice = service.register_user(shared_session, f"{_unique('alice')}@example.com", "Alice")
    bob = service.register_user(shared_session, f"{_unique('bob')}@example.com", "Bob")
    service.pay(service.place_order(shared_session, alice, {product: 2}))
    shared_session.commit()
    assert service.total_spent_cents(shared_session, alice) == 700
    assert service.total_spent_cents(shared_session, bob) == 0
