"""(b) A transaction per test, rolled back afterwards: each test may write, even commit, and
still leaves nothing behind. Here it runs on the worker's own database, so the tests can
reuse the same keys and count whole tables."""

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shop import service
from shop.models import OrderLine, Product, User


def _users(session):
    return session.scalar(select(func.count()).select_from(User))


@pytest.mark.parametrize("attempt", range(6))
def test_same_email_every_time(rollback_session, attempt):
    # Would fail from the second attempt on if an earlier attempt's user had survived.
    assert _users(rollback_session) == 0
    service.register_user(rollback_session, "erin@example.com", "Erin")
    rollback_session.commit()  # releases a savepoint; the outer transaction stays open
    assert _users(rollback_session) == 1


def test_failed_statement_does_not_spoil_the_test(rollback_session):
    service.add_product(rollback_session, "CUP", "Cup", 300)
    rollback_session.commit()
    with pytest.raises(IntegrityError):
        service.add_product(rollback_session, "CUP", "Another cup", 400)
    rollback_session.rollback()  # back to the savepoint: the first cup is still there
    assert rollback_session.scalar(select(Product.title).where(Product.sku == "CUP")) == "Cup"


def test_order_lines_are_priced_when_placed(rollback_session):
    user = service.register_user(rollback_session, "frank@example.com", "Frank")
    lamp = service.add_product(rollback_session, "LAMP", "Lamp", 4500)
    service.place_order(rollback_session, user, {lamp: 2})
    lamp.price_cents = 5000
    rollback_session.commit()
    assert rollback_session.scalars(select(OrderLine.unit_price_cents)).all() == [4500]


def test_empty_order_is_refused(rollback_session):
    user = service.register_user(rollback_session, "grace@example.com", "Grace")
    with pytest.raises(service.ShopError, match="at least one item"):
        service.place_order(rollback_session, user, {})
