"""The shop's operations. Each takes a Session and leaves committing to the caller."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shop.models import Order, OrderLine, Product, User


class ShopError(Exception):
    pass


def register_user(session: Session, email: str, name: str) -> User:
    email = email.strip().lower()
    if "@" not in email:
        raise ShopError(f"not an email address: {email!r}")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise ShopError(f"{email} is already registered")
    user = User(email=email, name=name)
    session.add(user)
    session.flush()
    return user


def add_product(session: Session, sku: str, title: str, price_cents: int) -> Product:
    product = Product(sku=sku, title=title, price_cents=price_cents)
    session.add(product)
    session.flush()
    return product


def place_order(session: Session, user: User, items: dict[Product, int]) -> Order:
    """An open order for ``user`` with ``quantity`` of each product, at today's prices."""
    if not items:
        raise ShopError("an order needs at least one item")
    lines = []
    for product, quantity in items.items():
        if quantity <= 0:
            raise ShopError(f"bad quantity {quantity} for {product.sku}")
        lines.append(
            OrderLine(product=product, quantity=quantity, unit_price_cents=product.price_cents)
        )
    order = Order(user=user, lines=lines)
    session.add(order)
    session.flush()
    return order


def pay(order: Order) -> None:
    if order.status != "open":
        raise ShopError(f"order {order.id} is {order.status}")
    order.status = "paid"


def total_spent_cents(session: Session, user: User) -> int:
    """What ``user`` has paid for, over all their paid orders."""
    return session.scalar(
        select(func.coalesce(func.sum(OrderLine.quantity * OrderLine.unit_price_cents), 0))
        .join(Order)
        .where(Order.user_id == user.id, Order.status == "paid")
    )
