import unittest

from logic import desired


class DesiredTest(unittest.TestCase):
    def test_enough_replicas_for_the_load(self):
        self.assertEqual(desired(0.5, 4, 0.75), 6.0)
        self.assertEqual(desired(0.5, 4, 0.25), 2.0)
        with self.assertRaises(ValueError):
            desired(0, 1, 1.0)


if __name__ == "__main__":
    unittest.main()
