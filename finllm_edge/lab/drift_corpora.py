"""Deterministic text generators for drift tests and benchmarks (no downloads): user requests in
the tuned domain (retail and corporate finance) and in three shifts: another domain (cooking), a
new finance sub-domain with its own vocabulary (crypto / DeFi) and another language (Spanish
finance). Same seed, same text, on every machine.

    requests("finance", 1000, seed=1)   # -> list of 1000 request strings
"""

from __future__ import annotations

import random

_COMPANIES = ["Northwind Industrial", "Acme Logistics", "Harbor Bancorp", "Summit Utilities", "Cedar Retail Group",
              "Atlas Semiconductors", "Bluewater Insurance", "Keystone Pharma", "Pioneer Energy", "Granite REIT",
              "Orchard Foods", "Meridian Software", "Falcon Airlines", "Riverbend Telecom", "Lakeside Chemicals"]
_METRICS = ["revenue", "net income", "operating margin", "gross margin", "free cash flow", "earnings per share",
            "EBITDA", "return on equity", "net interest margin", "operating cash flow", "dividend payout ratio",
            "debt to equity ratio", "interest coverage", "working capital", "book value per share"]
_INSTRUMENTS = ["a ten-year Treasury bond", "an index fund", "a corporate bond", "a municipal bond",
                "a money market fund", "a certificate of deposit", "dividend stocks", "an exchange-traded fund",
                "a balanced mutual fund", "inflation-protected securities", "a high-yield bond fund",
                "blue-chip shares"]
_CONCEPTS = ["duration", "yield to maturity", "the price to earnings ratio", "a bond coupon", "compound interest",
             "diversification", "dollar-cost averaging", "a stock split", "a share buyback", "credit risk",
             "the yield curve", "market capitalisation", "an expense ratio", "capital gains tax", "an annuity",
             "a margin call", "liquidity risk", "the discount rate", "a balance sheet", "an income statement"]
_EVENTS = ["the central bank raised rates by 25 basis points", "inflation came in above expectations",
           "the company cut its full-year guidance", "credit spreads widened", "the dollar strengthened",
           "unemployment ticked up", "bond yields fell after the jobs report", "the board approved a buyback",
           "the quarterly dividend was raised", "management reaffirmed guidance", "the stock fell after earnings"]
_PERIODS = ["the third quarter", "the fiscal year", "the first half", "the last twelve months", "the fourth quarter"]
_FIN_TEMPLATES = [
    "What does {concept} mean for an investor holding {instrument}?",
    "{company} reported {metric} of {num} million dollars in {period}, up {pct} percent. Is that good?",
    "How should I compare the {metric} of {company} and {company2}?",
    "If {event}, what happens to {instrument}?",
    "Explain {concept} in two sentences.",
    "Our {metric} fell {pct} percent in {period} while {metric2} rose. What could explain it?",
    "Is {instrument} a sensible choice for a retirement account with a {years}-year horizon?",
    "{company} has net debt of {num} million dollars and {metric} of {num2} million. How leveraged is it?",
    "Summarise the risks of {instrument} when {event}.",
    "How is {metric} calculated, and why do analysts watch it?",
    "The analyst raised the price target on {company} to {num} dollars after {event}. Should I buy?",
    "What is the difference between {concept} and {concept2}?",
]

_COINS = ["Bitcoin", "Ether", "Solana", "a stablecoin", "USDC", "a governance token", "wrapped BTC", "an altcoin",
          "a memecoin", "Polygon", "Avalanche", "a liquid staking token"]
_DEFI = ["staking", "a liquidity pool", "impermanent loss", "yield farming", "a perpetual swap", "the funding rate",
         "a token unlock", "an airdrop", "slippage", "gas fees", "a rug pull", "a smart contract audit",
         "a validator node", "a cold wallet", "a seed phrase", "an automated market maker", "a flash loan",
         "a cross-chain bridge", "proof of stake", "the halving", "on-chain volume", "a DAO treasury"]
_EXCHANGES = ["Uniswap", "Binance", "Coinbase", "Kraken", "Aave", "Curve", "Lido", "dYdX", "MakerDAO"]
_CRYPTO_TEMPLATES = [
    "Is {defi} on {exchange} worth it for {coin}?",
    "How does {defi} work, and what can go wrong with {defi2}?",
    "My {coin} position lost {pct} percent overnight after {defi}. What happened?",
    "Should I move my {coin} to {defi2} before {defi}?",
    "What APY is normal for {defi} of {coin} on {exchange}?",
    "Explain {defi} like I am new to crypto.",
    "The {coin} price dropped after {defi} on {exchange}; is {coin2} safer?",
    "How are gains from {defi} and {defi2} taxed when I swap {coin} for {coin2}?",
    "Can {exchange} liquidate my {coin} if {defi} spikes?",
]

_DISHES = ["a lemon risotto", "banana bread", "a chicken curry", "sourdough", "a vegetable lasagne", "pancakes",
           "a tomato soup", "chocolate brownies", "a beef stew", "fried rice", "a Greek salad", "apple pie"]
_INGREDIENTS = ["garlic", "fresh basil", "butter", "brown sugar", "smoked paprika", "coconut milk", "parmesan",
                "buttermilk", "yeast", "ginger", "olive oil", "cumin", "heavy cream", "baking soda", "shallots"]
_COOK_TEMPLATES = [
    "How long should I bake {dish} at {temp} degrees?",
    "Can I replace {ing} with {ing2} in {dish}?",
    "My {dish} came out too dry. Do I need more {ing}?",
    "What goes well with {dish} for a dinner party of {n}?",
    "How do I keep {dish} fresh for {n} days?",
    "Give me a quick recipe for {dish} without {ing}.",
    "Why does my {dish} taste bitter when I add {ing}?",
    "Should I simmer {ing} and {ing2} before adding them to {dish}?",
]

_ES_COMPANIES = ["Banco del Sur", "Energía Andina", "Telefónica Norte", "Grupo Olivar", "Seguros Atlántico",
                 "Constructora Ibérica", "Farmacéutica Luz", "Aerolíneas del Mar"]
_ES_METRICS = ["los ingresos", "el beneficio neto", "el margen operativo", "el flujo de caja libre",
               "el beneficio por acción", "la rentabilidad sobre recursos propios", "la deuda neta", "el dividendo"]
_ES_INSTR = ["un bono del Estado a diez años", "un fondo indexado", "un depósito a plazo fijo", "acciones de dividendo",
             "un plan de pensiones", "un fondo monetario", "letras del Tesoro", "un fondo de renta fija"]
_ES_CONCEPTS = ["la duración", "la rentabilidad al vencimiento", "el cupón de un bono", "el interés compuesto",
                "la diversificación", "la prima de riesgo", "la curva de tipos", "la inflación subyacente",
                "el ratio precio beneficio", "la liquidez"]
_ES_EVENTS = ["el banco central subió los tipos de interés", "la inflación superó las previsiones",
              "la empresa rebajó sus previsiones anuales", "la prima de riesgo se disparó",
              "el euro se fortaleció frente al dólar", "el paro aumentó en el último trimestre"]
_ES_TEMPLATES = [
    "¿Qué significa {concept} para un inversor que tiene {instrument}?",
    "{company} publicó {metric} de {num} millones de euros este trimestre, un {pct} por ciento más. ¿Es bueno?",
    "Si {event}, ¿qué pasa con {instrument}?",
    "Explícame {concept} en dos frases, por favor.",
    "¿Cómo comparo {metric} de {company} con el de {company2}?",
    "¿Es {instrument} una buena opción para la jubilación con un horizonte de {years} años?",
    "¿Cuáles son los riesgos de {instrument} cuando {event}?",
    "¿Cuál es la diferencia entre {concept} y {concept2}?",
]


def _fill(rng: random.Random, template: str, pools: dict[str, list[str]]) -> str:
    values = {}
    for key, pool in pools.items():
        a, b = rng.sample(pool, 2)
        values[key], values[key + "2"] = a, b
    values.update(num=str(rng.randint(12, 980)), num2=str(rng.randint(12, 980)), pct=f"{rng.uniform(0.5, 35):.1f}",
                  years=str(rng.choice([5, 10, 15, 20, 25, 30])), temp=str(rng.choice([160, 175, 180, 200, 220])),
                  n=str(rng.randint(2, 12)))
    return template.format(**values)


_KINDS = {
    "finance": (_FIN_TEMPLATES, {"company": _COMPANIES, "metric": _METRICS, "instrument": _INSTRUMENTS,
                                 "concept": _CONCEPTS, "event": _EVENTS, "period": _PERIODS}),
    "crypto": (_CRYPTO_TEMPLATES, {"coin": _COINS, "defi": _DEFI, "exchange": _EXCHANGES}),
    "cooking": (_COOK_TEMPLATES, {"dish": _DISHES, "ing": _INGREDIENTS}),
    "spanish": (_ES_TEMPLATES, {"company": _ES_COMPANIES, "metric": _ES_METRICS, "instrument": _ES_INSTR,
                                "concept": _ES_CONCEPTS, "event": _ES_EVENTS}),
}
KINDS = tuple(_KINDS)
SHIFTS = {"cooking": "another domain", "crypto": "a new finance sub-domain (crypto / DeFi vocabulary)",
          "spanish": "another language (Spanish finance)"}


def requests(kind: str, n: int, seed: int) -> list[str]:
    """`n` user requests of `kind` (one of KINDS); the same for the same seed. Each request is one to
    three sentences drawn from the kind's templates."""
    if kind not in _KINDS:
        raise ValueError(f"unknown corpus kind {kind!r}; choose from {', '.join(KINDS)}")
    templates, pools = _KINDS[kind]
    rng = random.Random(f"{kind}:{seed}")
    out = []
    for _ in range(n):
        k = rng.choice((1, 1, 2, 3))
        out.append(" ".join(_fill(rng, rng.choice(templates), pools) for _ in range(k)))
    return out


def text(kind: str, n: int, seed: int) -> str:
    """The same requests as a text, one per line (e.g. tuning text for a reference)."""
    return "\n".join(requests(kind, n, seed)) + "\n"
