"""A small product catalogue in the store's naming style, for the synthetic generator.

Names follow the real pattern: type first, then audience (gender or age group), brand
and model, with counts or sizes in the name (``Носки Demix, 3 пары``,
``Велосипед горный Stern Energy 1.0 26"``). Written by hand from the naming style; it
copies no real table.

``product_sex`` uses the client ``gender`` coding: 1 for items aimed at gender-1
clients, 0 for gender-0 clients, missing for unisex items.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The latent client segments the generator plants.
SEGMENTS = ("active sport", "families with children", "bargain hunters", "outdoor and big-ticket")


@dataclass(frozen=True)
class ProductType:
    """One product type (category) of the catalogue."""

    name: str
    price: int  # median price in roubles
    gendered: bool  # made in gender-specific versions
    kids: bool  # comes in children's versions
    affinity: tuple[float, float, float, float]  # log-preference per segment
    brands: tuple[str, ...]
    suffix: tuple[str, ...] = ("",)


TYPES: tuple[ProductType, ...] = (
    ProductType("Кроссовки", 5999, True, True, (1.6, 0.6, 0.4, 0.2),
                ("Nike", "adidas", "PUMA", "Demix", "Reebok", "Skechers")),
    ProductType("Кеды", 3499, True, True, (0.6, 0.5, 0.7, -0.3), ("Demix", "FILA", "Kappa")),
    ProductType("Полуботинки", 4999, True, False, (-0.2, 0.1, 0.3, 0.9),
                ("Outventure", "Merrell", "Columbia")),
    ProductType("Ботинки утепленные", 6999, True, True, (-0.4, 0.5, 0.0, 1.0),
                ("Outventure", "Reima", "Columbia")),
    ProductType("Бутсы", 4499, True, True, (1.3, 0.4, -0.2, -0.8), ("Nike", "PUMA", "adidas")),
    ProductType("Футболка", 1499, True, True, (1.2, 0.6, 0.9, 0.0),
                ("Demix", "Nike", "adidas", "Kappa", "FILA")),
    ProductType("Брюки", 2999, True, True, (0.7, 0.4, 0.8, 0.3), ("Demix", "Outventure", "Kappa")),
    ProductType("Шорты", 1999, True, True, (0.9, 0.4, 0.6, -0.2), ("Demix", "Nike", "adidas")),
    ProductType("Куртка утепленная", 8999, True, True, (-0.3, 0.6, 0.1, 1.2),
                ("Outventure", "Columbia", "Glissade")),
    ProductType("Толстовка", 3499, True, True, (0.8, 0.3, 0.6, 0.0), ("Demix", "Nike", "Kappa")),
    ProductType("Костюм спортивный", 4999, True, True, (0.7, 0.4, 0.5, -0.3),
                ("adidas", "Demix", "Kappa")),
    ProductType("Носки", 499, False, True, (1.1, 0.9, 1.3, 0.2), ("Demix", "Nike", "PUMA"),
                (", 2 пары", ", 3 пары", ", 5 пар")),
    ProductType("Бейсболка", 1299, False, True, (0.5, 0.4, 0.4, 0.1), ("Nike", "Demix", "FILA")),
    ProductType("Шапка", 999, False, True, (-0.2, 0.6, 0.5, 0.6), ("Demix", "Glissade", "Termit")),
    ProductType("Рюкзак", 2499, False, True, (0.3, 0.7, 0.2, 0.9), ("Outventure", "Nike", "Demix")),
    ProductType("Мяч футбольный", 1999, False, False, (1.0, 0.6, 0.0, -0.5),
                ("PUMA", "adidas", "Torneo"), (" размер 4", " размер 5")),
    ProductType("Мяч баскетбольный", 2299, False, False, (0.7, 0.4, -0.2, -0.6),
                ("Wilson", "Spalding", "Demix"), (" размер 6", " размер 7")),
    ProductType("Велосипед горный", 29999, False, True, (-0.6, 0.3, -1.2, 1.6),
                ("Stern", "Merida", "Trek"), (' 26"', ' 27.5"', ' 29"')),
    ProductType("Самокат", 6999, False, True, (-0.5, 1.3, -0.3, 0.3),
                ("Reaction", "Termit", "Oxelo")),
    ProductType("Роликовые коньки", 5499, False, True, (-0.2, 1.2, 0.0, 0.2),
                ("Roces", "Reaction", "Termit")),
    ProductType("Шлем", 2499, False, True, (-0.4, 1.1, -0.3, 0.8), ("FILA", "Reaction", "Stern")),
    ProductType("Набор защиты", 1999, False, True, (-0.6, 1.2, 0.1, 0.2), ("Reaction", "Termit"),
                (" из 3-х предметов", " из 6 предметов")),
    ProductType("Палатка", 12999, False, False, (-1.0, 0.3, -1.0, 1.8),
                ("Outventure", "Nordway", "Termit"), (" 2-местная", " 3-местная", " 4-местная")),
    ProductType("Спальный мешок", 4999, False, False, (-0.9, 0.1, -0.8, 1.5),
                ("Outventure", "Nordway")),
    ProductType("Гантели", 2999, False, False, (0.8, -0.4, 0.0, 0.2), ("Torneo", "Demix"),
                (", 2 x 5 кг", ", 2 x 8 кг")),
    ProductType("Коврик для йоги", 1499, False, False, (0.7, -0.2, 0.5, -0.2), ("Demix", "Torneo")),
    ProductType("Лыжи беговые", 7999, False, True, (-0.5, 0.2, -0.6, 1.3), ("Fischer", "Nordway")),
    ProductType("Купальник", 2999, True, True, (0.4, 0.5, 0.3, -0.4), ("Joss", "Atemi", "adidas")),
    ProductType("Очки для плавания", 999, False, True, (0.5, 0.6, 0.5, -0.4), ("Joss", "Atemi")),
    ProductType("Стол", 4999, False, False, (-1.2, 0.2, -0.6, 1.1), ("Outventure", "Nordway"),
                (" складной", " кемпинговый")),
)

MODELS = ("Flex Runner", "Revolution 6", "Energy 1.0", "Urban", "Rainbow", "Academy", "Pro 21",
          "Trail", "Classic", "Team", "Sprint", "Air", "Race", "Storm", "Comfort", "Active")

ADULT_AUDIENCE = {1: "мужские", 0: "женские"}
KIDS_AUDIENCE = {1: "для мальчиков", 0: "для девочек", None: "детские"}

COLOURS = ("черный", "белый", "синий", "красный", "серый", "зеленый", "розовый", "голубой",
           "бежевый", "оранжевый")
