import unittest

from logic import apply


class ApplyTest(unittest.TestCase):
    def test_a_scale_records_the_target(self):
        self.assertEqual(apply(2, 5), (5, "2 → 5 replicas"))


if __name__ == "__main__":
    unittest.main()
