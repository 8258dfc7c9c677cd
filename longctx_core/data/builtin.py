"""The built-in synthetic world: fictional people, cities, organisations and products, in English and Chinese.

Needs no download. Each entity gets one document (title = its name) made of fact sentences and neutral
filler sentences; each QA record asks about one fact, whose answer sits in exactly one sentence of exactly
one document (entity names are unique within a world and never reused as attribute values, and a fact
value that would also appear in another sentence of its document is re-drawn). Values are random per
entity and every fact has several sentence and question phrasings, so knowing the templates does not
answer the questions.

    records = builtin_records(100, seed=0)                                  # ~300-token documents
    toy = builtin_records(50, seed=0, spec=WorldSpec(kinds=("person",), name_syllables=(1, 1),
                          full_names=False, facts_per_doc=(1, 2), filler_per_doc=(0, 0)))   # 1-2 sentences

Deterministic for a seed: records are generated in order from one RNG, so the first k of
`builtin_records(n, seed)` equal `builtin_records(k, seed)`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass

from longctx_core.data.records import Document, Lang, QARecord
from longctx_core.data.seeding import derive_seed

logger = logging.getLogger(__name__)

KINDS = ("person", "city", "organisation", "product")


@dataclass(frozen=True)
class WorldSpec:
    """Shape of the generated world. Ranges are inclusive (min, max)."""

    zh_fraction: float = 0.5  # share of entities (and so records) rendered in Chinese
    facts_per_doc: tuple[int, int] = (6, 9)
    filler_per_doc: tuple[int, int] = (4, 8)  # neutral sentences that lengthen documents
    name_syllables: tuple[int, int] = (2, 3)  # per English name word; 1 gives short, often single-token names
    full_names: bool = True  # people get given + family name; False = one word
    kinds: tuple[str, ...] = KINDS
    facts: tuple[str, ...] = ()  # fact keys documents may hold (e.g. ("colour", "pet")); () = all of a kind's

    @classmethod
    def from_config(cls, world, lang: str | None = None) -> WorldSpec:
        """The spec of a `data.source.builtin` section (`BuiltinWorldConfig`); `lang` "en"/"zh" renders every
        entity in that language."""
        return cls(
            zh_fraction=world.zh_fraction if lang is None else float(lang == "zh"),
            facts_per_doc=tuple(world.facts_per_doc),
            filler_per_doc=tuple(world.filler_per_doc),
            name_syllables=tuple(world.name_syllables),
            full_names=world.full_names,
            kinds=tuple(world.kinds),
            facts=tuple(world.facts),
        )

    def __post_init__(self) -> None:
        for key in ("facts_per_doc", "filler_per_doc", "name_syllables"):
            lo, hi = getattr(self, key)
            if lo < 0 or hi < lo:
                raise ValueError(f"{key}: expected [min, max] with 0 <= min <= max, got [{lo}, {hi}]")
        if self.facts_per_doc[0] < 1 or self.name_syllables[0] < 1:
            raise ValueError("facts_per_doc: min must be >= 1 (and name_syllables min >= 1)")
        if not 0.0 <= self.zh_fraction <= 1.0:
            raise ValueError(f"zh_fraction: must be in [0, 1], got {self.zh_fraction}")
        if not self.kinds:
            raise ValueError("kinds: must name at least one entity kind")
        if set(self.kinds) - set(KINDS):
            raise ValueError(f"kinds: must be a non-empty subset of {KINDS}, got {self.kinds}")
        if self.facts:
            known = {f.key for kind in self.kinds for f in FACTS[kind]}
            if set(self.facts) - known:
                raise ValueError(f"facts: unknown for kinds {self.kinds}: {sorted(set(self.facts) - known)}")
            empty = [k for k in self.kinds if not any(f.key in self.facts for f in FACTS[k])]
            if empty:
                raise ValueError(f"facts: no fact left for kinds {empty}; known keys: {sorted(known)}")

    def facts_of(self, kind: str) -> list[Fact]:
        """The facts a document of `kind` may hold."""
        return [f for f in FACTS[kind] if not self.facts or f.key in self.facts]


# ---- vocabularies: (english, chinese) pairs -------------------------------------------------------------

_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "kr",
    "st",
    "th",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "m", "th"]
_ZH_SURNAMES = list(
    "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎"
)
_ZH_GIVEN = list(
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏飞宇浩然欣怡晨阳子涵梓轩雨泽思远嘉宁"
    "志国建文斌博毅俊豪杨帆佳琪婷雪梦瑶凯旭东立新永春海波鑫晶颖慧诗雅雯琳璐珊倩蕾薇睿哲铭航"
)
_ZH_PLACE = list(
    "青河安平宁远江山永和东西南北清泉松柏临川长乐云霞金石桃花凤鸣龙潭白沙新丰湖光海晏"
    "兴华昌盛泰康福寿丹阳春秋星月岚峰溪谷林原雪梅兰竹菊玉珠翠碧银铜铁锦绣德胜吉祥瑞庆"
)
_ORG_SUFFIX = [
    ("Institute", "研究所"),
    ("Works", "工坊"),
    ("Trading Company", "贸易公司"),
    ("Foundation", "基金会"),
    ("Laboratories", "实验室"),
    ("Cooperative", "合作社"),
]
_PLACE_SUFFIX_ZH = ["市", "镇", "县", "港"]

COLOURS = [
    ("red", "红色"),
    ("blue", "蓝色"),
    ("green", "绿色"),
    ("yellow", "黄色"),
    ("purple", "紫色"),
    ("orange", "橙色"),
    ("grey", "灰色"),
    ("white", "白色"),
    ("black", "黑色"),
    ("pink", "粉色"),
    ("brown", "棕色"),
    ("teal", "青绿色"),
]
PROFESSIONS = [
    ("carpenter", "木匠"),
    ("astronomer", "天文学家"),
    ("nurse", "护士"),
    ("pilot", "飞行员"),
    ("chemist", "化学家"),
    ("librarian", "图书管理员"),
    ("architect", "建筑师"),
    ("baker", "面包师"),
    ("geologist", "地质学家"),
    ("translator", "翻译"),
    ("engineer", "工程师"),
    ("journalist", "记者"),
    ("gardener", "园丁"),
    ("surgeon", "外科医生"),
    ("teacher", "教师"),
]
ANIMALS = [
    ("cat", "猫"),
    ("parrot", "鹦鹉"),
    ("tortoise", "乌龟"),
    ("rabbit", "兔子"),
    ("dog", "狗"),
    ("hamster", "仓鼠"),
    ("goldfish", "金鱼"),
    ("lizard", "蜥蜴"),
    ("canary", "金丝雀"),
]
INSTRUMENTS = [
    ("cello", "大提琴"),
    ("flute", "长笛"),
    ("piano", "钢琴"),
    ("guitar", "吉他"),
    ("trumpet", "小号"),
    ("harp", "竖琴"),
    ("drums", "架子鼓"),
    ("accordion", "手风琴"),
    ("erhu", "二胡"),
    ("clarinet", "单簧管"),
]
FOODS = [
    ("dumplings", "饺子"),
    ("lentil soup", "扁豆汤"),
    ("grilled fish", "烤鱼"),
    ("apple pie", "苹果派"),
    ("noodles", "面条"),
    ("fried rice", "炒饭"),
    ("cheese bread", "奶酪面包"),
    ("mushroom stew", "蘑菇炖菜"),
    ("pancakes", "煎饼"),
    ("tofu soup", "豆腐汤"),
]
HOBBIES = [
    ("chess", "下棋"),
    ("birdwatching", "观鸟"),
    ("pottery", "陶艺"),
    ("rowing", "划船"),
    ("calligraphy", "书法"),
    ("hiking", "徒步"),
    ("origami", "折纸"),
    ("fencing", "击剑"),
    ("astronomy", "观星"),
]
INDUSTRIES = [
    ("shipbuilding", "造船业"),
    ("textiles", "纺织业"),
    ("tea farming", "茶叶种植"),
    ("glassmaking", "玻璃制造"),
    ("fishing", "渔业"),
    ("mining", "采矿业"),
    ("printing", "印刷业"),
    ("software", "软件业"),
    ("clockmaking", "钟表制造"),
]
CATEGORIES = [
    ("bicycles", "自行车"),
    ("telescopes", "望远镜"),
    ("umbrellas", "雨伞"),
    ("kettles", "水壶"),
    ("headphones", "耳机"),
    ("sewing machines", "缝纫机"),
    ("lanterns", "灯笼"),
    ("typewriters", "打字机"),
    ("compasses", "指南针"),
]
MATERIALS = [
    ("bamboo", "竹子"),
    ("aluminium", "铝"),
    ("oak", "橡木"),
    ("copper", "铜"),
    ("glass", "玻璃"),
    ("carbon fibre", "碳纤维"),
    ("ceramic", "陶瓷"),
    ("steel", "钢"),
]
MONTHS = [
    ("January", "一月"),
    ("February", "二月"),
    ("March", "三月"),
    ("April", "四月"),
    ("May", "五月"),
    ("June", "六月"),
    ("July", "七月"),
    ("August", "八月"),
    ("September", "九月"),
    ("October", "十月"),
    ("November", "十一月"),
    ("December", "十二月"),
]
SMALL_NUMBERS = [
    ("two", "两"),
    ("three", "三"),
    ("four", "四"),
    ("five", "五"),
    ("six", "六"),
    ("seven", "七"),
    ("eight", "八"),
    ("nine", "九"),
]
ADJECTIVES = [
    ("quiet", "安静"),
    ("remarkable", "非凡"),
    ("modest", "低调"),
    ("curious", "奇特"),
    ("cheerful", "愉快"),
    ("stubborn", "固执"),
    ("elegant", "优雅"),
    ("practical", "务实"),
    ("mysterious", "神秘"),
    ("generous", "慷慨"),
    ("careful", "细心"),
    ("ambitious", "有抱负"),
    ("old-fashioned", "守旧"),
    ("lively", "活泼"),
]


# ---- facts: value generator + sentence / question phrasings per language --------------------------------


@dataclass(frozen=True)
class Fact:
    key: str
    value: str  # generator name, see World._value
    en: tuple[tuple[str, ...], tuple[str, ...]]  # (sentence templates, question templates)
    zh: tuple[tuple[str, ...], tuple[str, ...]]


def _f(key: str, value: str, en_s, en_q, zh_s, zh_q) -> Fact:
    return Fact(key, value, (tuple(en_s), tuple(en_q)), (tuple(zh_s), tuple(zh_q)))


FACTS: dict[str, list[Fact]] = {
    "person": [
        _f(
            "birthplace",
            "place",
            ["{name} was born in the town of {value}.", "The birthplace of {name} is {value}."],
            ["Where was {name} born?", "What is the birthplace of {name}?"],
            ["{name}出生在{value}。", "{name}的出生地是{value}。"],
            ["{name}出生在哪里？", "{name}的出生地是哪里？"],
        ),
        _f(
            "birth_year",
            "year",
            ["{name} was born in the year {value}.", "The year {name} was born was {value}."],
            ["In what year was {name} born?", "What year was {name} born in?"],
            ["{name}生于{value}年。", "{name}是{value}年出生的。"],
            ["{name}是哪一年出生的？", "{name}生于哪一年？"],
        ),
        _f(
            "profession",
            "profession",
            ["{name} works as {a_value}.", "By profession, {name} is {a_value}."],
            ["What does {name} do for a living?", "What is the profession of {name}?"],
            ["{name}的职业是{value}。", "{name}是一名{value}。"],
            ["{name}的职业是什么？", "{name}是做什么工作的？"],
        ),
        _f(
            "employer",
            "org",
            ["{name} has worked for {value} for several years.", "The employer of {name} is {value}."],
            ["Who does {name} work for?", "Which organisation employs {name}?"],
            ["{name}在{value}工作了好几年。", "{name}的雇主是{value}。"],
            ["{name}在哪个机构工作？", "{name}的雇主是谁？"],
        ),
        _f(
            "colour",
            "colour",
            [
                "The favourite colour of {name} is {value}.",
                "{name} likes the colour {value} more than any other.",
            ],
            ["What is the favourite colour of {name}?", "Which colour does {name} like best?"],
            ["{name}最喜欢的颜色是{value}。", "在所有颜色中，{name}最喜欢{value}。"],
            ["{name}最喜欢什么颜色？", "{name}最喜欢的颜色是什么？"],
        ),
        _f(
            "pet",
            "animal",
            ["{name} keeps {a_value} as a pet.", "At home, {name} looks after a pet {value}."],
            ["What pet does {name} keep?", "What kind of pet does {name} have?"],
            ["{name}养了一只{value}作为宠物。", "{name}在家里养着一只{value}。"],
            ["{name}养的宠物是什么？", "{name}家里养了什么宠物？"],
        ),
        _f(
            "instrument",
            "instrument",
            ["{name} plays the {value} in a local orchestra.", "On weekends {name} practises the {value}."],
            ["Which instrument does {name} play?", "What instrument does {name} practise?"],
            ["{name}在当地乐团演奏{value}。", "{name}周末会练习{value}。"],
            ["{name}演奏什么乐器？", "{name}练习的是哪种乐器？"],
        ),
        _f(
            "siblings",
            "small_number",
            ["{name} grew up with {value} siblings.", "{name} has {value} brothers and sisters."],
            ["How many siblings does {name} have?", "How many brothers and sisters does {name} have?"],
            ["{name}有{value}个兄弟姐妹。", "{name}和{value}个兄弟姐妹一起长大。"],
            ["{name}有几个兄弟姐妹？", "{name}有多少个兄弟姐妹？"],
        ),
        _f(
            "food",
            "food",
            ["The dish {name} likes best is {value}.", "{name} cooks {value} every Sunday."],
            ["What is the favourite dish of {name}?", "What does {name} cook every Sunday?"],
            ["{name}最爱吃的菜是{value}。", "{name}每个星期天都做{value}。"],
            ["{name}最爱吃什么？", "{name}每个星期天做什么菜？"],
        ),
        _f(
            "hobby",
            "hobby",
            ["In spare time, {name} enjoys {value}.", "The hobby of {name} is {value}."],
            ["What is the hobby of {name}?", "What does {name} enjoy in spare time?"],
            ["{name}业余时间喜欢{value}。", "{name}的爱好是{value}。"],
            ["{name}的爱好是什么？", "{name}业余时间喜欢做什么？"],
        ),
        _f(
            "house_number",
            "house_number",
            ["{name} lives at number {value} on the main street.", "The house of {name} is number {value}."],
            ["At what house number does {name} live?", "What is the house number of {name}?"],
            ["{name}住在主街{value}号。", "{name}家的门牌号是{value}号。"],
            ["{name}住在主街几号？", "{name}家的门牌号是多少？"],
        ),
    ],
    "city": [
        _f(
            "founded",
            "year",
            ["{name} was founded in {value}.", "The first houses of {name} were built in {value}."],
            ["When was {name} founded?", "In what year was {name} founded?"],
            ["{name}建于{value}年。", "{name}的第一批房屋建于{value}年。"],
            ["{name}建于哪一年？", "{name}是哪一年建立的？"],
        ),
        _f(
            "population",
            "population",
            ["{name} has a population of about {value}.", "About {value} people live in {name}."],
            ["What is the population of {name}?", "How many people live in {name}?"],
            ["{name}的人口约为{value}。", "大约有{value}人住在{name}。"],
            ["{name}的人口是多少？", "有多少人住在{name}？"],
        ),
        _f(
            "river",
            "place",
            ["The river {value} flows through {name}.", "{name} lies on the banks of the {value} river."],
            ["Which river flows through {name}?", "On which river does {name} lie?"],
            ["{value}河流经{name}。", "{name}坐落在{value}河畔。"],
            ["哪条河流经{name}？", "{name}坐落在哪条河边？"],
        ),
        _f(
            "mayor",
            "person",
            ["The current mayor of {name} is {value}.", "{name} is governed by mayor {value}."],
            ["Who is the mayor of {name}?", "Who governs {name} as mayor?"],
            ["{name}现任市长是{value}。", "{name}由市长{value}管理。"],
            ["{name}的市长是谁？", "谁是{name}的现任市长？"],
        ),
        _f(
            "industry",
            "industry",
            ["The main industry of {name} is {value}.", "Most jobs in {name} depend on {value}."],
            ["What is the main industry of {name}?", "Which industry do most jobs in {name} depend on?"],
            ["{name}的主要产业是{value}。", "{name}的大多数工作都依赖{value}。"],
            ["{name}的主要产业是什么？", "{name}的大多数工作依赖哪个产业？"],
        ),
        _f(
            "festival",
            "month",
            [
                "{name} holds its lantern festival every {value}.",
                "The lantern festival of {name} takes place in {value}.",
            ],
            [
                "In which month does {name} hold its lantern festival?",
                "When is the lantern festival of {name}?",
            ],
            ["{name}每年{value}举行灯笼节。", "{name}的灯笼节在{value}举行。"],
            ["{name}在几月举行灯笼节？", "{name}的灯笼节在什么时候？"],
        ),
        _f(
            "dish",
            "food",
            ["The best-known dish of {name} is {value}.", "Travellers come to {name} to taste its {value}."],
            ["What is the best-known dish of {name}?", "Which dish do travellers come to {name} to taste?"],
            ["{name}最有名的菜是{value}。", "游客来到{name}品尝那里的{value}。"],
            ["{name}最有名的菜是什么？", "游客到{name}品尝什么菜？"],
        ),
        _f(
            "bridges",
            "count",
            ["There are {value} bridges in {name}.", "{name} is crossed by {value} bridges."],
            ["How many bridges are there in {name}?", "How many bridges cross {name}?"],
            ["{name}有{value}座桥。", "共有{value}座桥横跨{name}。"],
            ["{name}有多少座桥？", "{name}共有几座桥？"],
        ),
        _f(
            "elevation",
            "elevation",
            ["{name} lies {value} metres above sea level.", "The elevation of {name} is {value} metres."],
            ["How high above sea level is {name}?", "What is the elevation of {name}?"],
            ["{name}海拔{value}米。", "{name}的海拔高度是{value}米。"],
            ["{name}的海拔是多少？", "{name}海拔多少米？"],
        ),
        _f(
            "twin",
            "place",
            ["{name} is twinned with the city of {value}.", "The twin city of {name} is {value}."],
            ["Which city is {name} twinned with?", "What is the twin city of {name}?"],
            ["{name}与{value}结为友好城市。", "{name}的友好城市是{value}。"],
            ["{name}的友好城市是哪里？", "{name}与哪座城市结为友好城市？"],
        ),
    ],
    "organisation": [
        _f(
            "founded",
            "year",
            ["{name} was established in {value}.", "{name} opened its doors in {value}."],
            ["When was {name} established?", "In what year did {name} open its doors?"],
            ["{name}成立于{value}年。", "{name}于{value}年开业。"],
            ["{name}成立于哪一年？", "{name}是哪一年开业的？"],
        ),
        _f(
            "headquarters",
            "place",
            ["{name} has its headquarters in {value}.", "The head office of {name} is in {value}."],
            ["Where is {name} headquartered?", "Where is the head office of {name}?"],
            ["{name}的总部设在{value}。", "{name}的总部位于{value}。"],
            ["{name}的总部在哪里？", "{name}总部设在哪里？"],
        ),
        _f(
            "founder",
            "person",
            ["{name} was founded by {value}.", "The founder of {name} was {value}."],
            ["Who founded {name}?", "Who was the founder of {name}?"],
            ["{name}由{value}创办。", "{name}的创始人是{value}。"],
            ["{name}是谁创办的？", "{name}的创始人是谁？"],
        ),
        _f(
            "employees",
            "population",
            ["{name} employs {value} people.", "The staff of {name} numbers {value}."],
            ["How many people does {name} employ?", "How large is the staff of {name}?"],
            ["{name}雇用了{value}名员工。", "{name}的员工人数是{value}。"],
            ["{name}有多少员工？", "{name}雇用了多少人？"],
        ),
        _f(
            "category",
            "category",
            ["{name} is best known for making {value}.", "Most of the income of {name} comes from {value}."],
            ["What is {name} best known for making?", "Where does most of the income of {name} come from?"],
            ["{name}以生产{value}闻名。", "{name}的大部分收入来自{value}。"],
            ["{name}以生产什么闻名？", "{name}的大部分收入来自什么？"],
        ),
        _f(
            "logo",
            "colour",
            ["The logo of {name} is {value}.", "{name} paints its logo in {value}."],
            ["What colour is the logo of {name}?", "In which colour does {name} paint its logo?"],
            ["{name}的标志是{value}的。", "{name}把标志涂成{value}。"],
            ["{name}的标志是什么颜色？", "{name}的标志涂成什么颜色？"],
        ),
        _f(
            "ceo",
            "person",
            ["The chief executive of {name} is {value}.", "{name} is led by {value}."],
            ["Who is the chief executive of {name}?", "Who leads {name}?"],
            ["{name}的首席执行官是{value}。", "{name}由{value}领导。"],
            ["{name}的首席执行官是谁？", "谁领导{name}？"],
        ),
        _f(
            "branches",
            "count",
            ["{name} runs {value} branch offices.", "There are {value} branch offices of {name}."],
            ["How many branch offices does {name} run?", "How many branch offices does {name} have?"],
            ["{name}设有{value}个分支机构。", "{name}共有{value}个分支机构。"],
            ["{name}有多少个分支机构？", "{name}设有几个分支机构？"],
        ),
    ],
    "product": [
        _f(
            "maker",
            "org",
            ["The {name} is made by {value}.", "{value} manufactures the {name}."],
            ["Who makes the {name}?", "Which company manufactures the {name}?"],
            ["{name}由{value}制造。", "{value}生产{name}。"],
            ["{name}是谁制造的？", "哪家公司生产{name}？"],
        ),
        _f(
            "released",
            "year",
            ["The {name} was first released in {value}.", "The first {name} reached the shops in {value}."],
            ["When was the {name} first released?", "In what year did the {name} reach the shops?"],
            ["{name}于{value}年首次发布。", "第一台{name}在{value}年上市。"],
            ["{name}是哪一年发布的？", "{name}在哪一年上市？"],
        ),
        _f(
            "price",
            "price",
            ["The {name} sells for {value} dollars.", "A new {name} costs {value} dollars."],
            ["How much does the {name} cost?", "What is the price of the {name}?"],
            ["{name}售价{value}元。", "一台新的{name}要{value}元。"],
            ["{name}售价多少？", "{name}的价格是多少？"],
        ),
        _f(
            "weight",
            "weight",
            ["The {name} weighs {value} grams.", "The weight of the {name} is {value} grams."],
            ["How much does the {name} weigh?", "What is the weight of the {name}?"],
            ["{name}重{value}克。", "{name}的重量是{value}克。"],
            ["{name}有多重？", "{name}的重量是多少？"],
        ),
        _f(
            "colour",
            "colour",
            ["The {name} is usually sold in {value}.", "Most buyers choose the {name} in {value}."],
            [
                "In which colour is the {name} usually sold?",
                "What colour do most buyers choose for the {name}?",
            ],
            ["{name}通常以{value}出售。", "大多数买家选择{value}的{name}。"],
            ["{name}通常是什么颜色的？", "大多数买家选择什么颜色的{name}？"],
        ),
        _f(
            "material",
            "material",
            ["The casing of the {name} is made of {value}.", "The {name} has a casing of {value}."],
            ["What is the casing of the {name} made of?", "What material is the casing of the {name}?"],
            ["{name}的外壳由{value}制成。", "{name}的外壳材料是{value}。"],
            ["{name}的外壳是用什么做的？", "{name}的外壳是什么材料？"],
        ),
        _f(
            "designer",
            "person",
            ["The {name} was designed by {value}.", "The designer of the {name} is {value}."],
            ["Who designed the {name}?", "Who is the designer of the {name}?"],
            ["{name}由{value}设计。", "{name}的设计师是{value}。"],
            ["{name}是谁设计的？", "{name}的设计师是谁？"],
        ),
        _f(
            "battery",
            "hours",
            [
                "The battery of the {name} lasts {value} hours.",
                "One charge keeps the {name} running for {value} hours.",
            ],
            [
                "How long does the battery of the {name} last?",
                "For how many hours does one charge keep the {name} running?",
            ],
            ["{name}的电池可以使用{value}小时。", "充一次电{name}可以运行{value}小时。"],
            ["{name}的电池能用多久？", "{name}充一次电能运行多少小时？"],
        ),
    ],
}

_FILLERS = {
    "en": [
        "{name} is mentioned in a number of local stories.",
        "A short article about {name} once appeared in a regional magazine.",
        "Opinions about {name} differ, but most of them are {adj}.",
        "Some of the old records concerning {name} were lost in a flood.",
        "Observers have described {name} as {adj} and {adj2}.",
        "A few letters that mention {name} are kept in a small archive.",
        "Neighbours remember {name} for reasons that are rarely explained.",
        "There is a painting of {name} that many people consider {adj}.",
        "Stories told about {name} tend to grow longer with every retelling.",
        "Students sometimes write essays about {name}.",
        "The name {name} is pronounced differently in different regions.",
        "Nobody agrees on whether {name} is more {adj} or more {adj2}.",
        "Several photographs of {name} are kept in a private collection.",
        "Guides who mention {name} usually use the word {adj}.",
    ],
    "zh": [
        "{name}在许多地方故事中被提到。",
        "一本地区杂志曾经刊登过一篇关于{name}的短文。",
        "人们对{name}的看法不一，但大多认为{name}很{adj}。",
        "一些关于{name}的旧档案在一场洪水中遗失了。",
        "观察者形容{name}既{adj}又{adj2}。",
        "几封提到{name}的信件保存在一个小档案馆里。",
        "邻居们记得{name}，但很少说明原因。",
        "有一幅关于{name}的画，许多人认为这幅画很{adj}。",
        "关于{name}的故事每讲一次都会变得更长。",
        "学生们有时会写关于{name}的文章。",
        "不同地区对{name}这个名字的读法不同。",
        "没有人能确定{name}更{adj}还是更{adj2}。",
        "几张{name}的照片被私人收藏。",
        "提到{name}的导游通常会用“{adj}”这个词。",
    ],
}


@dataclass(frozen=True)
class Entity:
    """One generated entity: its document and, per fact, (question, answer, evidence sentence)."""

    kind: str
    lang: Lang
    name: str
    doc: Document
    qa: tuple[tuple[str, str, str], ...]  # (question, answer, sentence of doc holding the answer)


class World:
    """A generator of unique entities; one instance per (seed, spec). Names are never reused."""

    def __init__(self, seed: int, spec: WorldSpec | None = None) -> None:
        self.spec = spec or WorldSpec()
        self.rng = random.Random(derive_seed("builtin-world", seed))
        self._used: set[str] = set()
        self._zh_people: set[str] = set()
        self._zh_subs: set[str] = set()  # every substring (2+ chars) of Chinese person names in use

    # -- names --------------------------------------------------------------------------------------------
    def _word(self) -> str:
        lo, hi = self.spec.name_syllables
        parts = [
            self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
            for _ in range(self.rng.randint(lo, hi))
        ]
        return "".join(parts).capitalize()

    def _fresh(self, make, check_subs: bool) -> str:
        """A name from `make()` not used before in this world (raises after many collisions).

        Chinese has no spaces between words, so a Chinese person's name must also not contain, or be
        contained in, another person's name (王伟 vs 王伟明); other names only need to differ (places,
        organisations and products carry suffixes or are never asked about by name alone).
        """
        for _ in range(200):
            name = make()
            if name in self._used or (check_subs and self._overlaps(name)):
                continue
            self._used.add(name)
            if check_subs:
                self._zh_subs.update(_substrings(name))
                self._zh_people.add(name)
            return name
        raise ValueError(
            f"builtin world ran out of unique names after {len(self._used)}; "
            "allow more name syllables or generate fewer records"
        )

    def _overlaps(self, name: str) -> bool:
        return name in self._zh_subs or any(s in self._zh_people for s in _substrings(name))

    def name(self, kind: str, lang: Lang) -> str:
        """A unique name for an entity (or a referenced person/place/organisation) of `kind`."""
        r = self.rng
        if lang == "zh":
            makers = {
                # Mostly two-character given names: one-character ones block every longer name containing them.
                "person": lambda: (
                    r.choice(_ZH_SURNAMES) + "".join(r.choices(_ZH_GIVEN, k=1 if r.random() < 0.15 else 2))
                ),
                "city": lambda: "".join(r.sample(_ZH_PLACE, r.randint(2, 3))) + r.choice(_PLACE_SUFFIX_ZH),
                "place": lambda: "".join(r.sample(_ZH_PLACE, r.randint(2, 3))),
                "organisation": lambda: "".join(r.sample(_ZH_PLACE, 2)) + r.choice(_ORG_SUFFIX)[1],
                "product": lambda: (
                    "".join(r.sample(_ZH_PLACE, 2)) + f"{r.choice('ABCDEFGHKMRSTVXZ')}{r.randint(2, 99)}型"
                ),
            }
        else:
            full = self.spec.full_names
            makers = {
                "person": lambda: f"{self._word()} {self._word()}" if full else self._word(),
                "city": self._word,
                "place": self._word,
                "organisation": lambda: f"{self._word()} {r.choice(_ORG_SUFFIX)[0]}",
                "product": lambda: f"{self._word()} {r.choice('ABCDEFGHKMRSTVXZ')}{r.randint(2, 99)}",
            }
        return self._fresh(makers[kind], lang == "zh" and kind == "person")

    # -- values -------------------------------------------------------------------------------------------
    def _value(self, kind: str, lang: Lang) -> str:
        """A random fact value of generator `kind`, rendered for `lang`."""
        r, zh = self.rng, lang == "zh"
        pairs = {
            "colour": COLOURS,
            "profession": PROFESSIONS,
            "animal": ANIMALS,
            "instrument": INSTRUMENTS,
            "food": FOODS,
            "hobby": HOBBIES,
            "industry": INDUSTRIES,
            "category": CATEGORIES,
            "material": MATERIALS,
            "month": MONTHS,
            "small_number": SMALL_NUMBERS,
        }
        if kind in pairs:
            return r.choice(pairs[kind])[1 if zh else 0]
        if kind in ("place", "person"):
            return self.name(kind, lang)
        if kind == "org":
            return self.name("organisation", lang)
        ranges = {
            "year": (1650, 2015),
            "population": (1200, 950000),
            "count": (11, 97),
            "elevation": (120, 3900),
            "house_number": (101, 989),
            "price": (15, 4800),
            "weight": (140, 9800),
            "hours": (13, 96),
        }
        n = r.randint(*ranges[kind])
        # Thousands separators only in English, and never for years.
        return f"{n:,}" if not zh and kind in ("population", "price", "weight") else str(n)

    # -- documents ----------------------------------------------------------------------------------------
    def entity(self, lang: Lang, kind: str | None = None) -> Entity:
        """Generate one entity: a document of shuffled fact and filler sentences, and its QA pairs."""
        r, spec = self.rng, self.spec
        kind = kind or r.choice(spec.kinds)
        name = self.name(kind, lang)
        allowed = spec.facts_of(kind)
        facts = r.sample(allowed, min(len(allowed), r.randint(*spec.facts_per_doc)))
        fillers = r.sample(_FILLERS[lang], min(len(_FILLERS[lang]), r.randint(*spec.filler_per_doc)))
        filler_sents = [self._fill(t, name, lang) for t in fillers]
        fact_rows = self._fact_sentences(facts, name, lang, filler_sents)
        sentences = [row[2] for row in fact_rows] + filler_sents
        r.shuffle(sentences)
        text = ("" if lang == "zh" else " ").join(sentences)
        return Entity(kind, lang, name, Document(name, text), tuple(fact_rows))

    def _fill(self, template: str, name: str, lang: Lang) -> str:
        adj, adj2 = self.rng.sample(ADJECTIVES, 2)
        i = 1 if lang == "zh" else 0
        return template.format(name=name, adj=adj[i], adj2=adj2[i])

    def _fact_sentences(self, facts: list[Fact], name: str, lang: Lang, others: list[str]):
        """(question, answer, sentence) per fact; a value is re-drawn while it would appear in a second
        sentence of the document (so the evidence sentence is unique)."""
        rows: list[tuple[str, str, str]] = []
        for fact in facts:
            sent_t, q_t = fact.zh if lang == "zh" else fact.en
            for _ in range(50):
                value = self._value(fact.value, lang)
                sentence = self.rng.choice(sent_t).format(name=name, value=value, a_value=_article(value))
                taken = others + [row[2] for row in rows]
                if not any(value in s for s in taken) and not any(row[1] in sentence for row in rows):
                    break
            else:
                continue  # could not make this fact unique: leave it out of the document
            question = self.rng.choice(q_t).format(name=name)
            rows.append((question, value, sentence[0].upper() + sentence[1:]))
        return rows


def _substrings(name: str) -> set[str]:
    return {name[i:j] for i in range(len(name)) for j in range(i + 2, len(name) + 1)}


def _article(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _lang_for(world: World) -> Lang:
    return "zh" if world.rng.random() < world.spec.zh_fraction else "en"


def iter_builtin_records(n: int, seed: int, spec: WorldSpec | None = None) -> Iterator[QARecord]:
    """`n` QA records, one entity each, asking about one random fact of that entity's document."""
    world = World(seed, spec)
    for i in range(n):
        ent = world.entity(_lang_for(world))
        question, answer, sentence = world.rng.choice(ent.qa)
        yield QARecord(
            id=f"builtin-{seed}-{i}",
            lang=ent.lang,
            question=question,
            answers=(answer,),
            evidence_docs=(ent.doc,),
            evidence_sentences=(sentence,),
            source="builtin",
        )


def builtin_records(n: int, seed: int, spec: WorldSpec | None = None) -> list[QARecord]:
    """The first `n` records of the world for `seed` (see `iter_builtin_records`)."""
    return list(iter_builtin_records(n, seed, spec))


def tokenizer_training_texts(n: int, seed: int) -> list[str]:
    """`n` texts to train the tiny tokenizer on: built-in documents (English and Chinese mixed), each
    followed by a rendered question and answer in one of the answer styles, so the tokenizer learns the
    document headers, quotation marks and answer markers the composed samples use."""
    from longctx_core.data import styles

    world = World(derive_seed("tokenizer-texts", seed))
    texts = []
    for i in range(n):
        ent = world.entity(_lang_for(world))
        question, answer, sentence = world.rng.choice(ent.qa)
        # A fixed cycle, not ANSWER_STYLES: a new style must not change the tiny tokenizer (`quote` adds no
        # new text pieces to learn).
        style = ("paraphrase", "plain", "unanswerable")[i % 3]
        number = 1 + i % 30
        parts = [
            styles.SYSTEM_PROMPT[ent.lang] if i % 10 == 0 else "",
            styles.render_document(number, ent.doc, ent.lang),
            styles.render_followup_user(question, ent.lang),
            styles.render_answer(style, ent.lang, answer, [(number, sentence)]),
        ]
        texts.append("\n\n".join(p for p in parts if p))
    return texts
