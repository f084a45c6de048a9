"""Common first names, used to recognise columns that hold names of people.

Names that are also everyday words or places (May, Grace, Will, Paris, Austin...) are left
out so that such values are not mistaken for names.
"""

from __future__ import annotations

FIRST_NAMES: tuple[str, ...] = (
    # English-speaking countries
    "James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas",
    "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Donald", "Steven", "Paul",
    "Andrew", "Joshua", "Kenneth", "Kevin", "Brian", "George", "Edward", "Ronald", "Timothy",
    "Jason", "Jeffrey", "Ryan", "Jacob", "Gary", "Nicholas", "Eric", "Jonathan", "Stephen",
    "Larry", "Justin", "Scott", "Brandon", "Benjamin", "Samuel", "Gregory", "Alexander",
    "Raymond", "Patrick", "Dennis", "Jerry", "Tyler", "Aaron", "Adam", "Henry", "Nathan",
    "Douglas", "Zachary", "Peter", "Kyle", "Walter", "Ethan", "Jeremy", "Harold", "Keith",
    "Roger", "Noah", "Gerald", "Carl", "Terry", "Sean", "Lawrence", "Arthur", "Liam",
    "Oliver", "Lucas", "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara",
    "Susan", "Jessica", "Sarah", "Karen", "Nancy", "Lisa", "Betty", "Margaret", "Sandra",
    "Ashley", "Kimberly", "Emily", "Donna", "Michelle", "Dorothy", "Carol", "Amanda",
    "Melissa", "Deborah", "Stephanie", "Rebecca", "Sharon", "Laura", "Cynthia", "Kathleen",
    "Amy", "Shirley", "Angela", "Helen", "Anna", "Brenda", "Pamela", "Nicole", "Emma",
    "Samantha", "Katherine", "Christine", "Debra", "Rachel", "Catherine", "Carolyn", "Janet",
    "Heather", "Diane", "Julie", "Joyce", "Olivia", "Sophia", "Isabella", "Mia", "Amelia",
    "Chloe", "Ella", "Lucy", "Hannah", "Megan", "Jane", "Alice", "Susanne", "Jose",
    # Other languages
    "Mohammed", "Muhammad", "Ahmed", "Ali", "Omar", "Fatima", "Aisha", "Wei", "Mei", "Hiroshi",
    "Yuki", "Kenji", "Juan", "Carlos", "Luis", "Miguel", "Pedro", "Javier", "Giovanni",
    "Marco", "Luca", "Giulia", "Francesca", "Hans", "Klaus", "Stefan", "Anja", "Ingrid",
    "Pierre", "Jean", "Camille", "Marie", "Sophie", "Claire", "Lars", "Sven", "Ivan",
    "Dmitri", "Sergei", "Olga", "Natalia", "Irina", "Raj", "Arjun", "Rahul", "Priya", "Ana",
    "Carmen", "Elena", "Sofia", "Maria",
)
